"""Fault injection for the in-memory drivers.

Tests arm a fault on an operation name; the next call (or the n-th, with
``skip``) of that operation raises :class:`DriverError`, either before the
operation has any effect or, with ``after=True``, once it has taken effect
(a call that half-happened). Every guarded call is also recorded in
:attr:`FaultInjector.calls`, so a test can see which calls an action made.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from dpustack.errors import DriverError


@dataclass
class _Fault:
    operation: str
    skip: int
    after: bool
    message: str


class FaultInjector:
    """Armed faults and a call record for one driver (named e.g. ``functions``)."""

    def __init__(self, driver: str):
        self.driver = driver
        self.calls: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def arm(self, operation: str, *, skip: int = 0, after: bool = False,
            message: str = "injected fault") -> None:
        """Make a later call of ``operation`` fail: the next one, or the one after ``skip`` calls."""
        with self._lock:
            self._faults.append(_Fault(operation, skip, after, message))

    def clear(self) -> None:
        """Disarm every fault and forget the recorded calls."""
        with self._lock:
            self._faults.clear()
            self.calls.clear()

    @property
    def armed(self) -> int:
        """How many faults are still waiting to fire."""
        with self._lock:
            return len(self._faults)

    @contextmanager
    def guard(self, operation: str) -> Iterator[None]:
        """Wrap the body of one driver operation."""
        fault = self._take(operation)
        if fault and not fault.after:
            raise self._error(fault)
        yield
        if fault:
            raise self._error(fault)

    def _take(self, operation: str) -> _Fault | None:
        with self._lock:
            self.calls.append(operation)
            for fault in self._faults:
                if fault.operation != operation:
                    continue
                if fault.skip:
                    fault.skip -= 1
                    return None
                self._faults.remove(fault)
                return fault
            return None

    def _error(self, fault: _Fault) -> DriverError:
        return DriverError(f"{self.driver}.{fault.operation}: {fault.message}")
