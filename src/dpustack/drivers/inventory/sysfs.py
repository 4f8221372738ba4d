"""SysfsInventoryDriver: PCI functions from ``<root>/bus/pci/devices``, devlink ports from devlink.

``root`` is ``/sys`` on a real node and a generated tree in tests and the lab
(:mod:`dpustack.lab.pcitrees`). VF logical numbers come from the PF's
``virtfn<N>`` links, read once per PF (resolving them again for each VF
would be quadratic in the VFs per PF).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from dpustack.drivers.inventory import InventoryDriver, inherit_from_pfs
from dpustack.errors import DriverError, InvalidInput
from dpustack.pci.address import canonical_address, parse_address
from dpustack.pci.device import TYPE_PCI, TYPE_PF, TYPE_VF, PciDevice
from dpustack.pci.devlink import DevlinkPort, parse_ports
from dpustack.pci.vpd import parse_vpd

log = logging.getLogger(__name__)

# sysfs file -> (PciDevice field, hex width); the kernel writes these as "0x15b3\n".
_HEX_FILES = {"vendor": ("vendor_id", 4), "device": ("product_id", 4), "class": ("class_code", 6),
              "subsystem_vendor": ("subsystem_vendor_id", 4), "subsystem_device": ("subsystem_device_id", 4)}
_INT_FILES = {"sriov_totalvfs": "sriov_totalvfs", "sriov_numvfs": "sriov_numvfs"}
VIRTFN = "virtfn"
DEVLINK_TIMEOUT = 10.0

Relations = dict[str, tuple[str, int]]  # VF address -> (PF address, VF logical number)


class SysfsInventoryDriver(InventoryDriver):
    """Reads a sysfs tree; ``devlink_json`` replaces running ``devlink -j port show`` (both from ``[pci]``)."""

    shared_options = ("pci",)

    def __init__(self, root: str | Path = "/sys", devlink_json: str | Path | None = None):
        self.root = Path(root)
        self.devlink_json = Path(devlink_json) if devlink_json is not None else None
        self._devices_dir = self.root / "bus" / "pci" / "devices"

    def validate(self) -> None:
        if not self._devices_dir.is_dir():
            raise DriverError(f"inventory: {self._devices_dir} is not a directory (check pci.root)")
        if self.devlink_json is not None and not self.devlink_json.is_file():
            raise DriverError(f"inventory: devlink output {self.devlink_json} is not a file (check pci.devlink_json)")

    def devices(self) -> list[PciDevice]:
        entries = self._entries()
        relations = self.vf_relations(entries)
        devices = []
        for address in sorted(entries, key=parse_address):
            try:
                devices.append(self._read(address, entries[address], relations.get(address)))
            except (OSError, ValueError, InvalidInput) as exc:  # e.g. a function vanishing while read
                log.warning("inventory: skipping %s: %s", address, exc)
        return inherit_from_pfs(devices)

    def vf_relations(self, entries: dict[str, set[str]]) -> Relations:
        """VF address -> (PF address, N), from each PF's ``virtfn<N>`` links."""
        relations: Relations = {}
        for pf, names in entries.items():
            for name in names:
                if name.startswith(VIRTFN) and name[len(VIRTFN):].isdigit():
                    try:
                        link = os.readlink(os.path.join(self._devices_dir, pf, name))
                        vf = canonical_address(os.path.basename(link))
                    except (OSError, InvalidInput) as exc:
                        log.warning("inventory: ignoring %s/%s: %s", pf, name, exc)
                        continue
                    relations[vf] = (pf, int(name[len(VIRTFN):]))
        return relations

    def devlink_ports(self) -> list[DevlinkPort]:
        if self.devlink_json is not None:
            try:
                text = self.devlink_json.read_text()
            except OSError as exc:
                raise DriverError(f"inventory: cannot read {self.devlink_json}: {exc.strerror}") from exc
            return self._parse_ports(text, str(self.devlink_json))
        binary = shutil.which("devlink")
        if binary is None:
            return []
        try:
            done = subprocess.run([binary, "-j", "port", "show"], capture_output=True, text=True,
                                  timeout=DEVLINK_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DriverError(f"inventory: devlink -j port show: {exc}") from exc
        if done.returncode != 0:
            raise DriverError(f"inventory: devlink -j port show exited {done.returncode}: {done.stderr.strip()}")
        return self._parse_ports(done.stdout, "devlink -j port show") if done.stdout.strip() else []

    def _entries(self) -> dict[str, set[str]]:
        """Canonical address -> names in the function's directory."""
        try:
            names = os.listdir(self._devices_dir)
        except OSError as exc:
            raise DriverError(f"inventory: cannot list {self._devices_dir}: {exc.strerror}") from exc
        entries = {}
        for name in names:
            try:
                entries[canonical_address(name)] = set(os.listdir(self._devices_dir / name))
            except InvalidInput:
                log.warning("inventory: %s/%s is not a PCI address; ignored", self._devices_dir, name)
            except OSError as exc:
                log.warning("inventory: skipping %s: %s", name, exc)
        return entries

    def _read(self, address: str, names: set[str], relation: tuple[str, int] | None) -> PciDevice:
        # plain string paths: ~10 reads per function, thousands of functions (pathlib costs a third)
        path = os.path.join(self._devices_dir, address)
        if not {"vendor", "device"} <= names:
            raise ValueError("no vendor or device id: not a PCI function")
        values: dict[str, Any] = {field: _hex(_read(path, name), width)
                                  for name, (field, width) in _HEX_FILES.items() if name in names}
        values.update({field: int(_read(path, name)) for name, field in _INT_FILES.items() if name in names})
        if "sriov_vf_device" in names:
            values["sriov_vf_device"] = _hex(_read(path, "sriov_vf_device"), 4)
        if "numa_node" in names:
            node = int(_read(path, "numa_node"))
            values["numa_node"] = node if node >= 0 else None
        if "driver" in names:
            values["driver"] = os.path.basename(os.readlink(os.path.join(path, "driver")))
        if "physfn" in names:
            values["parent_addr"], values["vf_num"] = relation or (
                canonical_address(os.path.basename(os.readlink(os.path.join(path, "physfn")))), None)
        if "net" in names:
            values.update(_netdev(os.path.join(path, "net")))
        if "vpd" in names:
            values.update(_vpd(os.path.join(path, "vpd")))
        values["dev_type"] = (TYPE_VF if "physfn" in names
                              else TYPE_PF if values.get("sriov_totalvfs") else TYPE_PCI)
        return PciDevice(address=address, **values)

    def _parse_ports(self, text: str, source: str) -> list[DevlinkPort]:
        try:
            return parse_ports(text)
        except InvalidInput as exc:
            raise DriverError(f"inventory: {source}: {exc.message}") from exc


def _read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name), "rb") as handle:
        return handle.read().decode("ascii", errors="replace").strip()


def _hex(text: str, width: int) -> str:
    """``0x15b3`` -> ``15b3``; ValueError for anything but up to ``width`` hex digits."""
    digits = text.lower().removeprefix("0x")
    if not 0 < len(digits) <= width or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"{text!r} is not a {width}-digit hex id")
    return digits.zfill(width)


def _netdev(net: str) -> dict[str, str]:
    """The first netdev of a function and its MAC."""
    names = sorted(os.listdir(net))
    if not names:
        return {}
    netdev = os.path.join(net, names[0])
    return {"devname": names[0], "mac": _read(netdev, "address").lower() if os.path.exists(
        os.path.join(netdev, "address")) else ""}


def _vpd(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as handle:
            vpd = parse_vpd(handle.read())
    except OSError as exc:  # real devices answer EIO or time out when their VPD is broken
        return {"vpd_error": f"VPD error: cannot read: {exc.strerror}"}
    return {"card_serial_number": vpd.serial, "vpd_error": vpd.error}
