"""In-memory SwitchDriver: bridges spring into being on first use; ports vanish with the process."""

from __future__ import annotations

import threading

from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.switch import SwitchDriver, SwitchPort
from dpustack.errors import DriverError


class MemorySwitchDriver(SwitchDriver):
    """Ports kept in a dict keyed by name (port names are switch-wide, as in OVS)."""

    def __init__(self) -> None:
        self.faults = FaultInjector("switch")
        self._ports: dict[str, SwitchPort] = {}
        self._packet_rates: dict[tuple[str, str], int] = {}  # (bridge, port) -> pps; a re-plug loses it
        self._lock = threading.Lock()

    def add_port(self, bridge: str, port_name: str, external_ids: dict[str, str], *,
                 may_exist: bool = True) -> SwitchPort:
        with self.faults.guard("add_port"), self._lock:
            existing = self._ports.get(port_name)
            if existing is not None:
                if existing.bridge != bridge:
                    raise DriverError(f"switch.add_port: port '{port_name}' is on bridge '{existing.bridge}'")
                if not may_exist:
                    raise DriverError(f"switch.add_port: port '{port_name}' already exists")
                external_ids = {**existing.external_ids, **external_ids}
            port = SwitchPort(bridge, port_name, dict(external_ids))
            self._ports[port_name] = port
            return port

    def del_port(self, bridge: str, port_name: str, *, if_exists: bool = True) -> None:
        with self.faults.guard("del_port"), self._lock:
            existing = self._ports.get(port_name)
            if existing is None or existing.bridge != bridge:
                if not if_exists:
                    raise DriverError(f"switch.del_port: no port '{port_name}' on bridge '{bridge}'")
                return
            del self._ports[port_name]
            self._packet_rates.pop((bridge, port_name), None)

    def list_ports(self, bridge: str | None = None) -> list[SwitchPort]:
        with self.faults.guard("list_ports"), self._lock:
            return [p for p in sorted(self._ports.values(), key=lambda p: (p.bridge, p.name))
                    if bridge is None or p.bridge == bridge]

    def set_packet_rate(self, bridge: str, port_name: str, pps: int | None) -> None:
        with self.faults.guard("set_packet_rate"), self._lock:
            existing = self._ports.get(port_name)
            if existing is None or existing.bridge != bridge:
                raise DriverError(f"switch.set_packet_rate: no port '{port_name}' on bridge '{bridge}'")
            if pps is None:
                self._packet_rates.pop((bridge, port_name), None)
            elif isinstance(pps, bool) or not isinstance(pps, int) or pps <= 0:
                raise DriverError(f"switch.set_packet_rate: pps must be a positive whole number, not {pps!r}")
            else:
                self._packet_rates[(bridge, port_name)] = pps

    def packet_rate(self, bridge: str, port_name: str) -> int | None:
        with self.faults.guard("packet_rate"), self._lock:
            return self._packet_rates.get((bridge, port_name))

    def wipe_packet_rates(self) -> None:
        """Forget every limit, as ovn-controller does to the ``ovs`` driver's meters when it reconnects."""
        with self._lock:
            self._packet_rates.clear()
