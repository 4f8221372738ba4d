"""The lab host's libvirt definition and what is read back from a domain's XML, without a daemon."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dpustack.lab import host_machine
from dpustack import libvirt_host
from dpustack.drivers.functions import host_bdf
from dpustack.errors import DriverError
from dpustack.lab.host_machine import QEMU_NS, domain_xml
from dpustack.lab.state import LabError


def definition(**kwargs) -> ET.Element:
    return ET.fromstring(domain_xml("bm-1", console_log=Path("/lab/bm-1/console.log"),
                                    command_socket=Path("/lab/bm-1/ttyS1.sock"), **kwargs))


def test_the_machine_is_a_tcg_q35_with_shared_memfd_memory_and_acpi():
    domain = definition()
    assert domain.get("type") == "qemu"
    assert domain.findtext("name") == "bm-1"
    assert (domain.findtext("vcpu"), domain.findtext("memory")) == ("1", "256")
    assert domain.find("memory").get("unit") == "MiB"
    assert domain.find("memoryBacking/source").get("type") == "memfd"
    assert domain.find("memoryBacking/access").get("mode") == "shared"
    assert domain.find("os/type").get("machine") == "q35" and domain.find("os/boot") is None
    assert domain.find("features/acpi") is not None
    assert [domain.findtext(event) for event in ("on_poweroff", "on_reboot", "on_crash")] == \
        ["destroy", "restart", "destroy"]
    devices = domain.find("devices")
    assert devices.find("interface") is None and devices.find("graphics") is None
    assert devices.find("memballoon").get("model") == "none"
    assert devices.find("controller[@type='usb']").get("model") == "none"


def test_ttyS0_is_a_logged_pty_console_and_ttyS1_a_unix_socket_the_machine_listens_on():
    serials = definition().findall("devices/serial")
    assert [(s.get("type"), s.find("target").get("port")) for s in serials] == [("pty", "0"), ("unix", "1")]
    assert serials[0].find("log").attrib == {"file": "/lab/bm-1/console.log", "append": "on"}
    assert serials[1].find("source").attrib == {"mode": "bind", "path": "/lab/bm-1/ttyS1.sock"}
    assert definition().find("devices/console").get("type") == "pty"


def test_root_ports_sit_on_the_root_complex_after_a_port_that_reserves_buses_up_to_0x40():
    domain = definition(root_ports=4)
    ports = domain.findall("devices/controller[@model='pcie-root-port']")
    layout = [(p.get("index"), p.find("alias").get("name"), p.find("address").get("bus"), p.find("address").get("slot"))
              for p in ports]
    assert layout == [("1", "ua-bus-gap", "0x00", "0x01"), ("2", "ua-rp0", "0x00", "0x02"),
                      ("3", "ua-rp1", "0x00", "0x03"), ("4", "ua-rp2", "0x00", "0x04"), ("5", "ua-rp3", "0x00", "0x05")]
    assert len({p.find("target").get("chassis") for p in ports}) == len(ports)
    overrides = {device.get("alias"): {p.get("name"): p.get("value") for p in device.iter(f"{{{QEMU_NS}}}property")}
                 for device in domain.find(f"{{{QEMU_NS}}}override")}
    assert overrides["ua-bus-gap"] == {"bus-reserve": "63", "io-reserve": "0"}
    assert overrides["ua-rp3"] == {"io-reserve": "0"}
    assert [host_bdf(slot) for slot in (0, 1, 2, 15)] == ["0000:41:00.0", "0000:42:00.0", "0000:43:00.0",
                                                            "0000:50:00.0"]


def test_sizes_out_of_range_are_refused():
    for kwargs in ({"root_ports": 0}, {"root_ports": host_machine.MAX_ROOT_PORTS + 1}, {"vcpus": 0},
                   {"memory_mib": 32}):
        with pytest.raises(LabError):
            definition(**kwargs)


def test_disk_names_follow_the_slot():
    assert [libvirt_host._disk_name(slot) for slot in (0, 1, 25, 26, 28)] == ["vda", "vdb", "vdz", "vdaa", "vdac"]


def test_devices_are_read_back_by_slot_with_the_callers_ids():
    domain = definition()
    devices = domain.find("devices")
    devices.append(ET.fromstring(
        "<interface type='ethernet'><mac address='52:54:00:00:00:02'/><target dev='tap2' managed='no'/>"
        "<model type='virtio'/><alias name='ua-nic-2'/><address type='pci' domain='0x0000' bus='0x04' slot='0x00'"
        " function='0x0'/></interface>"))
    devices.append(ET.fromstring(
        "<disk type='vhostuser' device='disk'><source type='unix' path='/v/boot.sock'/><target dev='vda' bus='virtio'/>"
        "<boot order='1'/><alias name='ua-boot'/><address type='pci' domain='0x0000' bus='0x02' slot='0x00'"
        " function='0x0'/></disk>"))
    devices.append(ET.fromstring("<disk type='file' device='cdrom'><alias name='sata0-0-0'/></disk>"))  # not ours
    found = libvirt_host._devices(domain)
    assert [(d.alias, d.kind, d.slot, d.bdf) for d in found] == [("boot", "disk", 0, "0000:41:00.0"),
                                                                   ("nic-2", "net", 2, "0000:43:00.0")]
    assert (found[0].socket, found[0].boot_order) == ("/v/boot.sock", 1)
    assert (found[1].mac, found[1].tap) == ("52:54:00:00:00:02", "tap2")


def test_a_bootable_disk_replaces_the_definitions_os_boot():
    domain = definition()
    ET.SubElement(domain.find("os"), "boot", dev="hd")  # what libvirt adds to a definition without boot orders
    disk = ET.fromstring("<disk type='vhostuser' device='disk'><boot order='1'/></disk>")
    updated = ET.fromstring(libvirt_host._with_device(domain, disk))
    assert updated.find("os/boot") is None and updated.find("devices/disk/boot").get("order") == "1"
    assert domain.find("os/boot") is not None  # the original is left as it was
    nic = ET.fromstring("<interface type='ethernet'/>")
    assert ET.fromstring(libvirt_host._with_device(domain, nic)).find("os/boot") is not None


def test_a_machine_started_without_boot_orders_gets_the_device_without_one():
    disk = ET.fromstring("<disk type='vhostuser' device='disk'><boot order='2'/></disk>")
    started_with_os_boot = ET.fromstring("<domain><os><boot dev='hd'/></os></domain>")
    assert ET.fromstring(libvirt_host._live_element(started_with_os_boot, disk)).find("boot") is None
    started_with_boot_orders = ET.fromstring("<domain><os/></domain>")
    assert ET.fromstring(libvirt_host._live_element(started_with_boot_orders, disk)).find("boot") is not None


def test_device_ids_are_checked():
    assert libvirt_host.user_alias("nic-2_a") == "ua-nic-2_a"
    for bad in ("", "has space", "x" * 61, "ua'"):
        with pytest.raises(DriverError):
            libvirt_host.user_alias(bad)
