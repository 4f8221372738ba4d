"""In-memory FunctionDriver: functions live in a dict and vanish with the process."""

from __future__ import annotations

import threading

from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.functions import Function, FunctionDriver, FunctionSpec, host_bdf, representor_name
from dpustack.errors import DriverError


class MemoryFunctionDriver(FunctionDriver):
    """Functions kept in memory, like hot-plugged functions lost on a SoC reboot."""

    def __init__(self) -> None:
        self.faults = FaultInjector("functions")
        self._functions: dict[str, Function] = {}
        self._lock = threading.Lock()

    def create(self, spec: FunctionSpec, *, may_exist: bool = True) -> Function:
        with self.faults.guard("create"), self._lock:
            existing = self._functions.get(spec.id)
            if existing is not None:
                return self._existing(existing, spec, may_exist)
            for other in self._functions.values():
                if other.slot == spec.slot:
                    raise DriverError(f"functions.create: slot {spec.slot} is taken by function '{other.id}'")
            function = Function(id=spec.id, slot=spec.slot, type=spec.type, kind=spec.kind, mac=spec.mac,
                                bdf=host_bdf(spec.slot),
                                representor=representor_name(spec.slot, spec.type, spec.kind),
                                features=tuple(spec.features))
            self._functions[spec.id] = function
            return function

    def get(self, function_id: str) -> Function | None:
        with self.faults.guard("get"), self._lock:
            return self._functions.get(function_id)

    def delete(self, function_id: str, *, if_exists: bool = True) -> None:
        with self.faults.guard("delete"), self._lock:
            if self._functions.pop(function_id, None) is None and not if_exists:
                raise DriverError(f"functions.delete: function '{function_id}' does not exist")

    def list(self) -> list[Function]:
        with self.faults.guard("list"), self._lock:
            return sorted(self._functions.values(), key=lambda f: f.slot)

    @staticmethod
    def _existing(existing: Function, spec: FunctionSpec, may_exist: bool) -> Function:
        if not may_exist:
            raise DriverError(f"functions.create: function '{spec.id}' already exists")
        if not existing.matches(spec):
            raise DriverError(f"functions.create: function '{spec.id}' exists with a different "
                              f"slot, type, kind, mac or features")
        return existing
