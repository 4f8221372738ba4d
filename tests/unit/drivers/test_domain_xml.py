"""The VM domain XML's fragments, its two forms and the specs it refuses."""

from __future__ import annotations

import copy
import dataclasses
import xml.etree.ElementTree as ET

import pytest

from dpustack.contract.numa import CellPlacement, NumaPlacement
from dpustack.drivers.hypervisor import domain_xml as dx
from dpustack.drivers.hypervisor.domain_xml import (DomainSpec, LabBacking, PassedDevice, PassedFunction,
                                                     SerialConsole, assemble)
from dpustack.errors import InvalidInput
from dpustack.libvirt_host import port_alias as host_port_alias

UUID = "5b0c1c4e-7d1a-4a8e-9a51-3f1c2d4e5f60"
LAB = LabBacking(tap=lambda function: f"tap-{function.id}", socket=lambda function: f"/srv/vhost/{function.id}.sock")


def placement(*, pinned: bool = True, cells: int = 2, page: int | None = None) -> NumaPlacement:
    """2 vCPUs and 512 MiB per cell; cell c's host CPUs are 4c+2, 4c+3 (pinned) or 4c..4c+3 (shared)."""
    made = []
    for c in range(cells):
        host = [4 * c + 2, 4 * c + 3] if pinned else [4 * c + k for k in range(4)]
        made.append(CellPlacement(guest_cell=c, host_cell=c, vcpus=[2 * c, 2 * c + 1], host_cpus=host,
                                  memory_mib=512))
    return NumaPlacement(cells=made, pinned=pinned, page_size_kib=page)


def spec(**changes) -> DomainSpec:
    base = DomainSpec(
        name="instance-1", uuid=UUID, vcpus=4, memory_mib=1024, placement=placement(page=2048),
        functions=[PassedFunction("port-1", "0000:41:00.0", "net", slot=0, mac="fa:16:3e:00:00:01"),
                   PassedFunction("vol-1", "0000:42:00.0", "storage", slot=1, boot_order=1),
                   PassedFunction("port-2", "0000:45:00.0", "net", slot=3, mac="fa:16:3e:00:00:02")],
        devices=[PassedDevice("gpu-1", "0000:3b:00.1", slot=2)])
    return dataclasses.replace(base, **changes)


def parsed(text: str) -> ET.Element:
    return ET.fromstring(text)


def by_alias(domain: ET.Element) -> dict[str, ET.Element]:
    """The devices in slots (not the root ports) by their user alias without ``ua-``."""
    return {element.find("alias").get("name")[3:]: element for element in domain.find("devices")
            if element.find("alias") is not None and element.tag != "controller"}


def address(element: ET.Element, path: str = "address") -> tuple[int, ...]:
    found = element.find(path)
    return tuple(int(found.get(key), 16) for key in ("domain", "bus", "slot", "function"))


# ---------------------------------------------------------------- CPU and NUMA
def test_pinned_vcpus_each_run_on_their_own_host_cpu_and_the_emulator_on_the_cells_cpus():
    tune = dx.cputune(spec())
    assert {pin.get("vcpu"): pin.get("cpuset") for pin in tune.findall("vcpupin")} == {
        "0": "2", "1": "3", "2": "6", "3": "7"}
    assert tune.find("emulatorpin").get("cpuset") == "2-3,6-7"
    assert dx.vcpu(spec()).get("cpuset") is None and dx.vcpu(spec()).text == "4"


def test_shared_vcpus_float_over_their_cells_cpus():
    one = spec(vcpus=2, memory_mib=512, placement=placement(pinned=False, cells=1))
    assert dx.vcpu(one).get("cpuset") == "0-3"
    assert dx.cputune(one).findall("vcpupin") == [] and dx.cputune(one).find("emulatorpin").get("cpuset") == "0-3"
    two = spec(placement=placement(pinned=False))
    assert dx.vcpu(two).get("cpuset") == "0-7"
    assert {pin.get("vcpu"): pin.get("cpuset") for pin in dx.cputune(two).findall("vcpupin")} == {
        "0": "0-3", "1": "0-3", "2": "4-7", "3": "4-7"}  # a guest cell's vCPUs stay on its host cell


def test_guest_numa_cells_carry_their_vcpus_and_memory_and_shared_access_on_huge_pages():
    cells = dx.cpu(spec(), "production").findall("numa/cell")
    assert [(c.get("id"), c.get("cpus"), c.get("memory"), c.get("unit"), c.get("memAccess")) for c in cells] == [
        ("0", "0-1", "512", "MiB", "shared"), ("1", "2-3", "512", "MiB", "shared")]
    small = dx.cpu(spec(placement=placement()), "production").findall("numa/cell")
    assert [c.get("memAccess") for c in small] == [None, None]


def test_the_cpu_mode_is_the_forms():
    assert dx.cpu(spec(), "production").get("mode") == "host-passthrough"
    assert dx.cpu(spec(), "lab").get("mode") is None  # TCG: libvirt's default CPU
    assert dx.cpu(spec(placement=None), "lab") is None
    assert dx.cpu(spec(placement=None), "production").find("numa") is None


def test_numatune_binds_memory_strictly_each_guest_cell_to_its_host_cell():
    crossed = NumaPlacement(cells=[
        CellPlacement(guest_cell=0, host_cell=3, vcpus=[0], host_cpus=[12], memory_mib=256),
        CellPlacement(guest_cell=1, host_cell=1, vcpus=[1], host_cpus=[5], memory_mib=768)], pinned=True)
    tune = dx.numatune(spec(vcpus=2, placement=crossed))
    assert (tune.find("memory").get("mode"), tune.find("memory").get("nodeset")) == ("strict", "1,3")
    assert [(m.get("cellid"), m.get("mode"), m.get("nodeset")) for m in tune.findall("memnode")] == [
        ("0", "strict", "3"), ("1", "strict", "1")]


def test_huge_pages_back_each_guest_cell_and_small_pages_need_no_backing_in_production():
    pages = dx.memory_backing(spec(placement=placement(page=1048576)), "production").findall("hugepages/page")
    assert [(p.get("size"), p.get("unit"), p.get("nodeset")) for p in pages] == [
        ("1048576", "KiB", "0"), ("1048576", "KiB", "1")]
    assert dx.memory_backing(spec(placement=placement()), "production") is None
    lab = dx.memory_backing(spec(placement=None), "lab")  # vhost-user back ends map the guest's memory
    assert (lab.find("source").get("type"), lab.find("access").get("mode"), lab.find("hugepages")) == (
        "memfd", "shared", None)


def test_without_a_placement_there_is_no_pinning_nor_numa():
    domain = parsed(assemble(spec(placement=None), "production"))
    assert [domain.find(tag) for tag in ("cputune", "numatune", "memoryBacking", "cpu/numa")] == [None] * 4
    assert domain.find("vcpu").text == "4" and domain.find("memory").text == "1024"


# ------------------------------------------------------------------- devices
def test_a_hostdev_passes_the_function_through_by_the_bdf_the_snic_api_returned():
    element = dx.hostdev(PassedFunction("vol-9", "0000:41:00.0", "storage", slot=5, boot_order=2))
    assert (element.tag, element.get("mode"), element.get("type"), element.get("managed")) == (
        "hostdev", "subsystem", "pci", "yes")
    assert address(element, "source/address") == (0, 0x41, 0, 0)
    assert address(element) == (0, 6, 0, 0)  # slot 5's root port is controller 6
    assert element.find("boot").get("order") == "2" and element.find("alias").get("name") == "ua-vol-9"
    other = dx.hostdev(PassedDevice("qat-1", "10:3b:1f.7", slot=0))  # short form, any case
    assert address(other, "source/address") == (0x10, 0x3B, 0x1F, 7)
    assert other.find("source/address").get("domain") == "0x0010"


def test_a_remote_managed_nics_vf_is_a_hostdev_interface_of_its_bdf_with_the_ports_mac():
    element = dx.device_element(PassedDevice("net-p1", "0000:05:00.4", slot=1, mac="FA:16:3E:00:00:0A"),
                                "production")
    assert (element.tag, element.get("type"), element.get("managed")) == ("interface", "hostdev", "yes")
    assert element.find("mac").get("address") == "fa:16:3e:00:00:0a"
    assert element.find("source/address").get("type") == "pci"
    assert address(element, "source/address") == (0, 5, 0, 4)
    assert address(element) == (0, 2, 0, 0) and element.find("alias").get("name") == "ua-net-p1"
    assert element.find("vlan") is None  # a DPU's VF takes no VLAN from the host (seed 001)


def test_a_vfs_mac_must_be_unicast():
    with pytest.raises(InvalidInput, match="devices\\[0\\].mac") as caught:
        assemble(spec(devices=[PassedDevice("net-p1", "0000:05:00.4", slot=2, mac="01:00:5e:00:00:01")]),
                 "production")
    assert caught.value.field == "devices[0].mac"


def test_production_passes_every_function_and_device_as_a_hostdev_in_its_slot():
    domain = parsed(assemble(spec(), "production"))
    devices = by_alias(domain)
    assert {alias: element.tag for alias, element in devices.items()} == {
        "port-1": "hostdev", "vol-1": "hostdev", "port-2": "hostdev", "gpu-1": "hostdev"}
    assert {alias: address(element, "source/address") for alias, element in devices.items()} == {
        "port-1": (0, 0x41, 0, 0), "vol-1": (0, 0x42, 0, 0), "port-2": (0, 0x45, 0, 0), "gpu-1": (0, 0x3B, 0, 1)}
    ports = {c.find("alias").get("name"): int(c.get("index")) for c in domain.iterfind(
        "devices/controller[@model='pcie-root-port']")}
    assert ports == {dx.port_alias(slot): slot + 1 for slot in range(dx.ROOT_PORTS)}
    for alias, slot in (("port-1", 0), ("vol-1", 1), ("gpu-1", 2), ("port-2", 3)):
        assert address(devices[alias]) == (0, ports[dx.port_alias(slot)], 0, 0)
    assert domain.find("devices/interface") is None and domain.find("devices/disk") is None


def test_the_lab_form_puts_what_stands_for_each_function_at_its_hostdevs_guest_address():
    lab_spec = spec(devices=[])
    production = by_alias(parsed(assemble(lab_spec, "production")))
    lab_domain = parsed(assemble(lab_spec, "lab", LAB))
    lab = by_alias(lab_domain)
    assert {alias: address(element) for alias, element in lab.items()} == {
        alias: address(element) for alias, element in production.items()}
    nic = lab["port-1"]
    assert (nic.tag, nic.get("type"), nic.find("mac").get("address"), nic.find("target").get("dev"),
            nic.find("target").get("managed"), nic.find("model").get("type")) == (
        "interface", "ethernet", "fa:16:3e:00:00:01", "tap-port-1", "no", "virtio")
    disk = lab["vol-1"]
    assert (disk.tag, disk.get("type"), disk.find("source").get("type"), disk.find("source").get("path"),
            disk.find("target").get("dev"), disk.find("boot").get("order")) == (
        "disk", "vhostuser", "unix", "/srv/vhost/vol-1.sock", "vdb", "1")
    assert lab_domain.find("devices/hostdev") is None and lab_domain.get("type") == "qemu"


def test_the_forms_differ_only_in_domain_type_cpu_mode_memory_backing_and_the_functions():
    production, lab = parsed(assemble(spec(devices=[]), "production")), parsed(assemble(spec(devices=[]), "lab", LAB))
    assert (production.get("type"), lab.get("type")) == ("kvm", "qemu")
    for domain in (production, lab):
        domain.attrib.pop("type")
        domain.find("cpu").attrib.clear()
        domain.remove(domain.find("memoryBacking"))
        devices = domain.find("devices")
        for element in by_alias(domain).values():
            devices.remove(element)
    assert ET.tostring(production) == ET.tostring(lab)


def test_the_serial_console_and_the_guest_agent_channel():
    domain = parsed(assemble(spec(console=SerialConsole(log="/var/log/vm/console.log")), "production"))
    serial = domain.find("devices/serial")
    assert (serial.get("type"), serial.find("log").get("file"), serial.find("target").get("port")) == (
        "pty", "/var/log/vm/console.log", "0")
    assert domain.find("devices/console").get("type") == "pty"
    channel = domain.find("devices/channel")
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}
    assert channel.find("source").get("path") is None  # libvirt chooses it
    controller = domain.find("devices/controller[@type='virtio-serial']")
    assert address(controller) == (0, 0, dx.VIRTIO_SERIAL_DEVICE, 0)
    unix = parsed(assemble(spec(console=SerialConsole(type="unix", socket="/run/vm/ttyS0.sock"),
                                guest_agent_socket="/run/vm/qga.sock"), "production"))
    assert unix.find("devices/serial/source").attrib == {"mode": "bind", "path": "/run/vm/ttyS0.sock"}
    assert unix.find("devices/channel/source").get("path") == "/run/vm/qga.sock"


def test_the_root_port_alias_is_the_lab_host_machines():
    assert [dx.port_alias(slot) for slot in range(30)] == [host_port_alias(slot) for slot in range(30)]


def test_cpusets_and_disk_names():
    assert dx.cpuset([8, 0, 1, 2, 3, 10, 11, 3]) == "0-3,8,10-11"
    assert dx.cpuset([5]) == "5"
    assert [dx.disk_target(slot) for slot in (0, 1, 25, 26, 27)] == ["vda", "vdb", "vdz", "vdaa", "vdab"]


def test_assemble_does_not_change_the_spec():
    made = spec()
    kept = copy.deepcopy(made)
    assemble(made, "production")
    assert made == kept


# ----------------------------------------------------------------- bad input
def one_function(function: PassedFunction) -> DomainSpec:
    return spec(functions=[function], devices=[])


@pytest.mark.parametrize("bdf", ["not-a-bdf", "0000:41:00", "0000:41:20.0", "0000:141:00.0", "0000:41:00.8", ""])
def test_a_bdf_that_is_not_a_bdf_is_refused_naming_the_function(bdf: str):
    with pytest.raises(InvalidInput, match="not a PCI address|is above") as caught:
        assemble(one_function(PassedFunction("port-1", bdf, "net", slot=0, mac="fa:16:3e:00:00:01")), "production")
    assert caught.value.field == "functions[0].host_bdf"
    with pytest.raises(InvalidInput) as caught:
        dx.hostdev(PassedDevice("gpu-1", bdf, slot=0))
    assert caught.value.field == "host_bdf"


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"functions": [PassedFunction("a", "0000:41:00.0", "net", 2, mac="fa:16:3e:00:00:01"),
                    PassedFunction("b", "0000:42:00.0", "storage", 2)]}, "functions[1].slot", "'a' has slot 2"),
    ({"devices": [PassedDevice("gpu-1", "0000:3b:00.1", slot=0)]}, "devices[0].slot", "'port-1' has slot 0"),
    ({"devices": [PassedDevice("gpu-1", "0000:41:00.0", slot=9)]}, "devices[0].host_bdf", "0000:41:00.0"),
    ({"devices": [PassedDevice("port-1", "0000:3b:00.1", slot=9)]}, "devices[0].id", "'port-1' has id"),
    ({"functions": [PassedFunction("a", "0000:41:00.0", "storage", 16)]}, "functions[0].slot", "slots 0 to 15"),
    ({"functions": [PassedFunction("a", "0000:41:00.0", "net", 0)]}, "functions[0].mac", "not a unicast MAC"),
    ({"functions": [PassedFunction("a", "0000:41:00.0", "net", 0, mac="01:00:5e:00:00:01")]}, "functions[0].mac",
     "multicast"),
    ({"functions": [PassedFunction("a", "0000:41:00.0", "disk", 0)]}, "functions[0].kind", "'net' or 'storage'"),
    ({"functions": [PassedFunction("a b", "0000:41:00.0", "storage", 0)]}, "functions[0].id", "letters"),
    ({"functions": [PassedFunction("a", "0000:41:00.0", "storage", 0, boot_order=1),
                    PassedFunction("b", "0000:42:00.0", "storage", 1, boot_order=1)]}, "functions[1].boot_order",
     "'a' has boot_order 1"),
    ({"vcpus": 3}, "placement", "vcpus=4, the domain has vcpus=3"),
    ({"memory_mib": 2048}, "placement", "memory_mib=1024, the domain has memory_mib=2048"),
    ({"uuid": "not-a-uuid"}, "uuid", "not a UUID"),
    ({"name": "a/b"}, "name", "letters"),
    ({"root_ports": 30}, "root_ports", "1 to 29"),
    ({"console": SerialConsole(type="unix")}, "console", "unix socket with its path"),
    ({"placement": NumaPlacement(cells=[
        CellPlacement(guest_cell=1, host_cell=0, vcpus=[0, 1, 2, 3], host_cpus=[0], memory_mib=1024)], pinned=False)},
     "placement.cells", "guest cells must be 0..0"),
    ({"placement": NumaPlacement(cells=[
        CellPlacement(guest_cell=0, host_cell=0, vcpus=[0, 1, 2, 3], host_cpus=[0], memory_mib=1024)], pinned=False,
        page_size_kib=1048576 * 2)}, "placement.cells", "whole number of 2097152 KiB pages"),
    ({"placement": placement(page=3000)}, "placement.page_size_kib", "not a page size"),
])
def test_a_bad_spec_is_refused_naming_the_field(changes: dict, field: str, words: str):
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(")) as caught:
        assemble(spec(**changes), "production")
    assert caught.value.field == field


def test_the_lab_form_stands_a_virtio_rng_in_for_each_pci_device_at_its_hostdevs_guest_address():
    vf = PassedDevice("net-p9", "0000:05:00.3", slot=4, mac="fa:16:3e:00:00:09")
    made = spec(devices=[PassedDevice("gpu-1", "0000:3b:00.1", slot=2), vf])
    production, lab = by_alias(parsed(assemble(made, "production"))), by_alias(parsed(assemble(made, "lab", LAB)))
    for alias in ("gpu-1", "net-p9"):
        stand_in = lab[alias]
        assert (stand_in.tag, stand_in.get("model"), stand_in.find("backend").get("model"),
                stand_in.findtext("backend")) == ("rng", "virtio", "random", "/dev/urandom")
        assert address(stand_in) == address(production[alias])
    assert address(lab["gpu-1"]) == (0, 3, 0, 0) and address(lab["net-p9"]) == (0, 5, 0, 0)


def test_the_lab_form_needs_its_backing_for_functions():
    with pytest.raises(InvalidInput, match="needs a LabBacking") as caught:
        assemble(spec(devices=[]), "lab")
    assert caught.value.field == "lab"
    with pytest.raises(InvalidInput) as caught:
        assemble(spec(), "staging")
    assert caught.value.field == "form"


def test_a_lab_domain_gets_the_labs_command_channel_on_ttys1_when_its_backing_names_one():
    backing = dataclasses.replace(LAB, command_socket=lambda uuid: f"/srv/cmd/{uuid}.sock")
    serials = parsed(assemble(spec(devices=[]), "lab", backing)).findall("devices/serial")
    assert [(s.get("type"), s.find("target").get("port")) for s in serials] == [("pty", "0"), ("unix", "1")]
    assert serials[1].find("source").attrib == {"mode": "bind", "path": f"/srv/cmd/{UUID}.sock"}
    assert len(parsed(assemble(spec(devices=[]), "lab", LAB)).findall("devices/serial")) == 1
