"""In-memory InventoryDriver: the devices and ports a test hands it."""

from __future__ import annotations

from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.inventory import InventoryDriver, inherit_from_pfs
from dpustack.pci.device import PciDevice
from dpustack.pci.devlink import DevlinkPort


class MemoryInventoryDriver(InventoryDriver):
    """Fixed hardware; tests may change ``hardware`` and ``ports`` between calls."""

    def __init__(self, devices: list[PciDevice] | None = None, ports: list[DevlinkPort] | None = None):
        self.faults = FaultInjector("inventory")
        self.hardware = list(devices or [])
        self.ports = list(ports or [])

    def devices(self) -> list[PciDevice]:
        with self.faults.guard("devices"):
            return inherit_from_pfs(sorted(self.hardware, key=lambda d: d.address))

    def devlink_ports(self) -> list[DevlinkPort]:
        with self.faults.guard("devlink_ports"):
            return list(self.ports)
