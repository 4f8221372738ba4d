"""The VM domain XML against libvirt itself: its schema (``virt-xml-validate``) and a real private libvirtd.

Both forms are validated with and without NUMA cells, pinning and huge pages, with a GPU and a remote-managed
NIC's VF among the PCI devices; the lab form is also defined (not started) on a libvirtd in a namespace of its
own, which must keep every device (the stand-ins of the PCI devices too) at the guest PCI address the XML
gave it and keep the pinning and NUMA tuning as written.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpustack.contract.numa import CellPlacement, NumaPlacement
from dpustack.drivers.hypervisor.domain_xml import (DomainSpec, LabBacking, PassedDevice, PassedFunction,
                                                     SerialConsole, assemble, port_alias)
from dpustack.lab import libvirt_daemon
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.libvirt_host import connect
from netns import namespaces

VALIDATOR = "virt-xml-validate"
UUID = "0f7d3c1a-2b4e-4c6d-8e9f-a1b2c3d4e5f6"
LAB = LabBacking(tap=lambda function: f"tap{function.slot}", socket=lambda function: f"/tmp/dxs-{function.id}.sock")


def cells(count: int, *, pinned: bool, page: int | None) -> NumaPlacement:
    """``count`` cells of 2 vCPUs and 1 GiB each."""
    made = [CellPlacement(guest_cell=c, host_cell=c, vcpus=[2 * c, 2 * c + 1],
                          host_cpus=[2 * c, 2 * c + 1] if pinned else [2 * c, 2 * c + 1, 2 * c + 8],
                          memory_mib=1024) for c in range(count)]
    return NumaPlacement(cells=made, pinned=pinned, page_size_kib=page)


VARIANTS = {
    "plain": None,
    "shared-1-cell": cells(1, pinned=False, page=None),
    "pinned-1-cell": cells(1, pinned=True, page=None),
    "pinned-2-cells-2M-pages": cells(2, pinned=True, page=2048),
    "shared-2-cells-1G-pages": cells(2, pinned=False, page=1048576),
}


def spec(variant: str, *, devices: bool = True) -> DomainSpec:
    placement = VARIANTS[variant]
    vcpus = placement.vcpus if placement else 2
    return DomainSpec(
        name=f"vm-{variant}", uuid=UUID, vcpus=vcpus, memory_mib=placement.memory_mib if placement else 512,
        placement=placement,
        functions=[PassedFunction("port-1", "0000:41:00.0", "net", slot=0, mac="fa:16:3e:00:00:01"),
                   PassedFunction("boot-vol", "0000:42:00.0", "storage", slot=1, boot_order=1),
                   PassedFunction("data-vol", "0000:44:00.0", "storage", slot=3),
                   PassedFunction("port-2", "0000:4f:00.0", "net", slot=14, mac="fa:16:3e:00:00:02")],
        devices=[PassedDevice("gpu-1", "0000:3b:00.1", slot=2),
                 PassedDevice("net-vf", "0000:05:00.3", slot=4, mac="fa:16:3e:00:00:03")] if devices else [],
        console=SerialConsole(log="/tmp/dxs-console.log"))


def validate(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which(VALIDATOR)
    assert tool is not None, f"{VALIDATOR} is missing: apt-get install libvirt-clients libxml2-utils"
    return subprocess.run([tool, str(path), "domain"], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("form", ["production", "lab"])
def test_both_forms_validate_against_libvirts_schema(form: str, variant: str, tmp_path: Path):
    xml = assemble(spec(variant), form, LAB if form == "lab" else None)
    path = tmp_path / f"{form}-{variant}.xml"
    path.write_text(xml)
    done = validate(path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "validates" in done.stderr


def test_a_unix_console_and_a_guest_agent_socket_validate(tmp_path: Path):
    made = dataclasses.replace(spec("pinned-1-cell"), console=SerialConsole(type="unix", socket="/run/vm/ttyS0.sock",
                                                                            log="/var/log/vm/console.log"),
                               guest_agent_socket="/run/vm/qga.sock")
    path = tmp_path / "unix.xml"
    path.write_text(assemble(made, "production"))
    done = validate(path)
    assert done.returncode == 0, done.stderr + done.stdout


def test_the_validator_refuses_what_libvirts_schema_does_not_allow(tmp_path: Path):
    domain = ET.fromstring(assemble(spec("pinned-1-cell"), "production"))
    domain.find("numatune/memory").set("mode", "sometimes")  # not a numatune mode
    path = tmp_path / "bad.xml"
    path.write_text(ET.tostring(domain, encoding="unicode"))
    done = validate(path)
    assert done.returncode != 0 and "fails to validate" in done.stderr


# ---------------------------------------------------------- a real libvirtd
@pytest.fixture(scope="module")
def daemon(libvirt_cache: Path) -> Iterator[LibvirtDaemon]:
    assert Path(libvirt_daemon.LIBVIRTD).exists(), "libvirtd is missing: apt-get install libvirt-daemon " \
                                                  "libvirt-daemon-driver-qemu"
    workdir = Path(tempfile.mkdtemp(prefix="dxs-", dir="/tmp"))  # short: unix socket paths
    try:
        with namespaces("dxs") as names:
            made = LibvirtDaemon(workdir / "lv", names["dxs"], cache=libvirt_cache)
            try:
                made.start()
                yield made
            finally:
                made.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def slots_of(domain: ET.Element) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Device alias -> (the slot of the root port it sits on, its whole guest address as written)."""
    slot_of_bus = {int(c.get("index")): c.find("alias").get("name")
                   for c in domain.iterfind("devices/controller[@model='pcie-root-port']")}
    ports = {alias: int(alias.removeprefix("ua-rp")) for alias in slot_of_bus.values()}
    found = {}
    for element in domain.find("devices"):
        alias, address = element.find("alias"), element.find("address")
        if element.tag == "controller" or alias is None or address is None or address.get("type") != "pci":
            continue
        port = slot_of_bus[int(address.get("bus"), 16)]
        found[alias.get("name")] = (ports[port], tuple(int(address.get(k), 16)
                                                       for k in ("domain", "bus", "slot", "function")))
    return found


def in_kib(attributes: dict[str, str]) -> dict[str, str]:
    """A NUMA cell's attributes with its memory in KiB, as libvirt writes it back."""
    if attributes.get("unit") != "MiB":
        return dict(attributes)
    return {**attributes, "memory": str(int(attributes["memory"]) * 1024), "unit": "KiB"}


@pytest.mark.parametrize("variant", ["plain", "pinned-2-cells-2M-pages", "shared-2-cells-1G-pages"])
def test_libvirt_defines_the_lab_form_and_keeps_every_guest_pci_address(daemon: LibvirtDaemon, variant: str):
    made = spec(variant)
    written = ET.fromstring(assemble(made, "lab", LAB))
    connection = connect(daemon.uri)
    try:
        domain = connection.defineXML(ET.tostring(written, encoding="unicode"))
        try:
            back = ET.fromstring(domain.XMLDesc(0))
        finally:
            domain.undefine()
        assert [d.name() for d in connection.listAllDomains()] == []
    finally:
        connection.close()
    assert slots_of(back) == slots_of(written)
    assert {alias: slot for alias, (slot, _) in slots_of(back).items()} == {
        f"ua-{item.id}": item.slot for item in [*made.functions, *made.devices]}
    assert [c.find("alias").get("name") for c in back.iterfind("devices/controller[@model='pcie-root-port']")] == [
        port_alias(slot) for slot in range(made.root_ports)]
    for path in ("cputune", "numatune", "cpu/numa", "memoryBacking/hugepages"):
        ours, theirs = written.find(path), back.find(path)
        assert (ours is None) == (theirs is None), path
        if ours is not None:
            assert [in_kib(e.attrib) for e in ours] == [in_kib(e.attrib) for e in theirs], path
    assert (back.findtext("memory"), back.find("memory").get("unit")) == (str(made.memory_mib * 1024), "KiB")
    assert (back.findtext("vcpu"), back.find("vcpu").get("cpuset")) == (written.findtext("vcpu"),
                                                                       written.find("vcpu").get("cpuset"))
    assert back.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    kinds = {element.find("alias").get("name"): (element.tag, element.get("type"))
             for element in back.find("devices") if element.tag in ("interface", "disk")}
    assert kinds == {"ua-port-1": ("interface", "ethernet"), "ua-port-2": ("interface", "ethernet"),
                     "ua-boot-vol": ("disk", "vhostuser"), "ua-data-vol": ("disk", "vhostuser")}
    stand_ins = {element.find("alias").get("name"): (element.get("model"), element.findtext("backend"))
                 for element in back.iterfind("devices/rng")}
    assert stand_ins == {"ua-gpu-1": ("virtio", "/dev/urandom"), "ua-net-vf": ("virtio", "/dev/urandom")}
