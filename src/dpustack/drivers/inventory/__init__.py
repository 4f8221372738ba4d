"""InventoryDriver: the PCI functions of the node and the DPU's devlink ports."""

from __future__ import annotations

import abc
from dataclasses import replace
from pathlib import Path

from dpustack.drivers.base import Driver
from dpustack.drivers.options import DriverOptions
from dpustack.pci.device import PciDevice
from dpustack.pci.devlink import DevlinkPort


class DiscoveryOptions(DriverOptions):
    """[pci] ``root`` and ``devlink_json``: where an inventory driver reads the PCI tree and the devlink
    ports (docs/pci.md); the rest of ``[pci]`` is the agent's inventory role."""

    root: Path = Path("/sys")
    devlink_json: Path | None = None


class InventoryDriver(Driver):
    """What PCI hardware the node has (unfiltered) and how its NIC switch names ports."""

    interface = "inventory"
    shared_tables = {"pci": DiscoveryOptions}

    @abc.abstractmethod
    def devices(self) -> list[PciDevice]:
        """Every PCI function, ordered by address, with its card serial (a VF's from its PF if it has
        none of its own) and, for a VF, its PF's MAC. Raises DriverError when the tree cannot be read."""

    @abc.abstractmethod
    def devlink_ports(self) -> list[DevlinkPort]:
        """The devlink ports of the node's NIC switches (none where there is no devlink)."""


def inherit_from_pfs(devices: list[PciDevice]) -> list[PciDevice]:
    """Give each VF its PF's MAC, and its PF's card serial when it has none of its own."""
    by_address = {device.address: device for device in devices}
    result = []
    for device in devices:
        pf = by_address.get(device.parent_addr or "")
        if pf is not None:
            device = replace(device, pf_mac=pf.mac,
                             card_serial_number=device.card_serial_number or pf.card_serial_number)
        result.append(device)
    return result
