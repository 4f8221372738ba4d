"""The machine side of the lab's functions: each function's device in its slot of the host's libvirt domain.

    slots = MachineSlots("qemu+unix:///system?socket=…", "host-bm-1", Path("/srv/lab/vhost"))
    devices = slots.devices("list")            # slot -> Device, of the running machine or its definition
    slots.plug("create 'net-1'", function)     # the NIC on tap3 / the disk on <vhost_dir>/<id>.sock
    slots.unplug("delete 'net-1'", 3)          # once the guest let go

A function in slot N is the device with alias ``slot<N>`` (:func:`device_alias`)
on the machine's root port N, where the guest sees it at the function's BDF:
a net function a virtio NIC with the function's MAC on tap ``tap<N>``
(:func:`tap_name`), a storage function a virtio disk on the vhost-user-blk
socket its volume is served on (:func:`dpustack.drivers.storage.vhost_socket`),
bootable, lower slots first. A slot holding another device, or this alias
with another MAC, tap or socket, is an error, never replaced. Every error
(libvirt's reason included) comes as DriverError naming the call.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dpustack.drivers.functions import Function
from dpustack.drivers.storage import vhost_socket
from dpustack.errors import DriverError
from dpustack.libvirt_host import Device, HostMachine


def device_alias(slot: int) -> str:
    """The machine device of the function in ``slot``."""
    return f"slot{slot}"


def tap_name(slot: int) -> str:
    """The host namespace's tap the NIC in ``slot`` is on."""
    return f"tap{slot}"


class MachineSlots:
    """Functions plugged into domain ``machine`` on the libvirtd at ``uri``; storage functions' sockets in
    ``vhost_dir``."""

    def __init__(self, uri: str, machine: str, vhost_dir: Path):
        self.uri = uri
        self.name = machine
        self.vhost_dir = Path(vhost_dir)
        self._host = HostMachine(uri, machine)

    def slots(self, action: str) -> list[int]:
        with self._failing(action):
            return self._host.slots()

    def devices(self, action: str) -> dict[int, Device]:
        """The devices in the machine's slots, by slot."""
        with self._failing(action):
            return {device.slot: device for device in self._host.devices()}

    def check_slot(self, action: str, slot: int) -> None:
        """DriverError unless the machine has ``slot``."""
        slots = self.slots(action)
        if slot not in slots:
            limit = f"slots 0 to {max(slots)}" if slots else "no slots"
            raise DriverError(f"functions.{action}: slot {slot} is beyond machine '{self.name}', which has "
                              f"{limit}", field="slot")

    def socket(self, function: Function) -> Path:
        return vhost_socket(self.vhost_dir, function.id)

    def holds(self, function: Function, device: Device | None) -> bool:
        """Whether ``device`` (what the function's slot holds) is the function's device."""
        return (device is not None and device.alias == device_alias(function.slot)
                and self._mismatch(function, device) is None)

    def check(self, action: str, function: Function, device: Device | None) -> None:
        """DriverError if the function's slot holds a device that is not the function's."""
        if device is None:
            return
        where = f"functions.{action}: slot {function.slot} of machine '{self.name}'"
        if device.alias != device_alias(function.slot):
            raise DriverError(f"{where} holds device '{device.alias}', which is not a dpustack function's")
        mismatch = self._mismatch(function, device)
        if mismatch:
            raise DriverError(f"{where} holds a device that is not what function '{function.id}' is: {mismatch}")

    def running(self, action: str) -> bool:
        with self._failing(action):
            return self._host.state() == "on"

    def plug(self, action: str, function: Function) -> None:
        """Plug the function's device into its (empty) slot; a storage function's socket must be there."""
        with self._failing(action):
            if function.kind == "net":
                assert function.mac is not None, "a net function has a MAC"
                self._host.plug_net(function.slot, tap_name(function.slot), function.mac, device_alias(function.slot))
                return
            socket = self.socket(function)
            if not _is_socket(socket):
                raise DriverError(f"the volume of storage function '{function.id}' is not attached yet: no "
                                  f"vhost-user-blk socket at {socket}")
            self._host.plug_disk(function.slot, socket, device_alias(function.slot), boot_order=function.slot + 1)

    def unplug(self, action: str, slot: int) -> None:
        """Remove the device of the function in ``slot`` if the machine has it; returns once the guest let go."""
        with self._failing(action):
            self._host.unplug(device_alias(slot), missing_ok=True)

    def _mismatch(self, function: Function, device: Device) -> str | None:
        """What of ``device`` differs from the function's device (None: nothing)."""
        if function.kind == "net":
            wanted = ("net", function.mac, tap_name(function.slot))
            found = (device.kind, device.mac, device.tap)
            what = "kind, MAC and tap"
        else:
            wanted = ("disk", str(self.socket(function).resolve()))
            found = (device.kind, device.socket)
            what = "kind and socket"
        if found == wanted:
            return None
        return f"{what} {', '.join(map(str, found))} (wanted {', '.join(map(str, wanted))})"

    @contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        try:
            yield
        except DriverError as exc:
            raise DriverError(f"functions.{action}: {exc.message}", field=exc.field) from exc


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
