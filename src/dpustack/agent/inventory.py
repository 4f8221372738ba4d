"""The inventory role: discover the node's PCI devices, offer the ones ``[pci]`` selects, pool them.

The result is cached and refreshed on every reconcile pass, so the node
report and the ``/v1/pci`` endpoints never walk sysfs themselves. A failed
refresh keeps the previous result and is logged once until it changes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from dpustack.agent.config import PciSection
from dpustack.drivers.inventory import InventoryDriver
from dpustack.errors import DpustackError, NotFound
from dpustack.pci.device import PciDevice
from dpustack.pci.devlink import DevlinkPort, find_representor
from dpustack.pci.pools import Pool, group_pools
from dpustack.pci.specs import select

log = logging.getLogger(__name__)

# PF ids of the DPUs whose card serial names a DPU to the controller (vendor, product) -> model.
BLUEFIELD_PFS = {("15b3", "a2d2"): "BlueField", ("15b3", "a2d6"): "BlueField-2", ("15b3", "a2dc"): "BlueField-3"}
TRAIT_REMOTE_MANAGED = "COMPUTE_REMOTE_MANAGED_PORTS"


@dataclass(frozen=True)
class InventorySnapshot:
    """One discovery pass: every device found, the offered ones, their pools, the devlink ports."""

    devices: list[PciDevice] = field(default_factory=list)
    offered: list[PciDevice] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    ports: list[DevlinkPort] = field(default_factory=list)


class Inventory:
    """Discovery, filtering and pooling for one agent, cached between reconcile passes."""

    def __init__(self, driver: InventoryDriver, config: PciSection, hostname: str):
        self._driver = driver
        self._config = config
        self._hostname = hostname
        self._lock = threading.Lock()
        self._snapshot = InventorySnapshot()
        self._logged: tuple[str, ...] = ()

    @property
    def snapshot(self) -> InventorySnapshot:
        return self._snapshot

    def refresh(self) -> None:
        """Discover, filter and pool again; on a driver error keep what was known."""
        with self._lock:
            problems: list[str] = []
            try:
                devices = self._driver.devices()
            except DpustackError as exc:
                self._log_once([f"cannot discover PCI devices (keeping the last result): {exc.message}"])
                return
            try:
                ports = self._driver.devlink_ports()
            except DpustackError as exc:
                problems.append(f"cannot read devlink ports (keeping the last ones): {exc.message}")
                ports = self._snapshot.ports
            selection = select(devices, self._config.specs)
            problems += selection.warnings
            self._log_once(problems)
            self._snapshot = InventorySnapshot(devices=devices, offered=selection.devices, ports=ports,
                                               pools=group_pools(selection.devices, self._config.flavor_attrs))

    def representor(self, pf_mac: str, vf_num: int) -> DevlinkPort:
        """The representor of VF ``vf_num`` of the host PF ``pf_mac``; re-reads devlink once if unknown."""
        try:
            return find_representor(self._snapshot.ports, pf_mac, vf_num)
        except NotFound:
            self.refresh()  # VFs may have been created since the last pass
            return find_representor(self._snapshot.ports, pf_mac, vf_num)

    def report(self) -> dict[str, Any]:
        """The node report's PCI fields."""
        snapshot = self._snapshot
        traits = [TRAIT_REMOTE_MANAGED] if any(d.remote_managed for d in snapshot.offered) else []
        serials = sorted({d.card_serial_number for d in snapshot.devices
                          if (d.vendor_id, d.product_id) in BLUEFIELD_PFS and d.card_serial_number})
        return {
            "pci_flavor_attrs": list(self._config.flavor_attrs),
            "pci_devices": [device.to_dict() for device in snapshot.offered],
            "pci_pools": [pool.summary() for pool in snapshot.pools],
            "traits": traits,
            "dpus": [{"hostname": self._hostname, "card_serial_number": serial} for serial in serials],
        }

    def _log_once(self, problems: list[str]) -> None:
        """Log the warnings of a pass, unless the previous pass logged the very same ones."""
        if tuple(problems) != self._logged:
            for problem in problems:
                log.warning("inventory: %s", problem)
        self._logged = tuple(problems)
