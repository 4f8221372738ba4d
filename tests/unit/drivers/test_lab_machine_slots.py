"""The lab function driver's machine mode, without a machine: its options and how it names its devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpustack.drivers.functions import Function, host_bdf
from dpustack.drivers.functions.lab import LabFunctionDriver
from dpustack.drivers.functions.lab_machine import MachineSlots, device_alias, tap_name
from dpustack.drivers.storage import vhost_socket
from dpustack.drivers.storage.qsd import QsdStorageDriver
from dpustack.errors import DriverError
from dpustack.libvirt_host import Device


def net(slot: int, mac: str = "52:54:00:00:00:03") -> Function:
    return Function(id="net-1", slot=slot, type="PF", kind="net", mac=mac, bdf=host_bdf(slot),
                    representor=f"pf{slot}hpf")


def disk(slot: int) -> Function:
    return Function(id="storage-1", slot=slot, type="PF", kind="storage", mac=None, bdf=host_bdf(slot),
                    representor=f"snap{slot}")


@pytest.mark.parametrize("given, missing", [
    ({"machine_uri": "qemu:///system"}, "machine"),
    ({"machine": "lab-bm-1", "vhost_dir": "/srv/vhost"}, "machine_uri"),
    ({"machine_uri": "qemu:///system", "machine": "lab-bm-1"}, "vhost_dir"),
])
def test_the_machine_options_come_together(given, missing):
    with pytest.raises(DriverError, match=f"{missing} is missing: machine mode takes") as caught:
        LabFunctionDriver("h", "d", **given)
    assert caught.value.field == missing


def test_without_machine_options_there_is_no_machine():
    assert LabFunctionDriver("h", "d").machine is None


def test_the_storage_driver_and_the_machine_agree_on_a_functions_socket(tmp_path: Path):
    slots = MachineSlots("qemu:///system", "lab-bm-1", tmp_path)
    assert slots.socket(disk(2)) == vhost_socket(tmp_path, "storage-1") == tmp_path / "storage-1.sock"
    assert QsdStorageDriver(socket_dir=tmp_path).socket_path("storage-1") == slots.socket(disk(2))


def test_a_device_is_the_functions_only_with_its_alias_kind_mac_tap_or_socket(tmp_path: Path):
    slots = MachineSlots("qemu:///system", "lab-bm-1", tmp_path)
    nic = Device(alias=device_alias(3), kind="net", slot=3, bdf=host_bdf(3), mac="52:54:00:00:00:03", tap=tap_name(3))
    socket = str(vhost_socket(tmp_path, "storage-1").resolve())
    drive = Device(alias="slot4", kind="disk", slot=4, bdf=host_bdf(4), socket=socket, boot_order=5)

    assert (device_alias(3), tap_name(3)) == ("slot3", "tap3")
    assert slots.holds(net(3), nic) and slots.holds(disk(4), drive)
    assert not slots.holds(net(3), None)
    assert not slots.holds(net(3, mac="52:54:00:00:00:99"), nic)
    assert not slots.holds(disk(3), nic)
    slots.check("create 'net-1'", net(3), None)
    slots.check("create 'net-1'", net(3), nic)
    with pytest.raises(DriverError, match="slot 3 of machine 'lab-bm-1' holds a device that is not what "
                                          "function 'net-1' is: kind, MAC and tap net, 52:54:00:00:00:03, tap3"):
        slots.check("create 'net-1'", net(3, mac="52:54:00:00:00:99"), nic)
    with pytest.raises(DriverError, match="holds device 'boot', which is not a dpustack function's"):
        slots.check("create 'storage-1'", disk(4), Device(alias="boot", kind="disk", slot=4, bdf=host_bdf(4)))
