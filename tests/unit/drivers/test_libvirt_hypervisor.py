"""The libvirt hypervisor driver on recorded answers: capabilities and domain XML, and its options.

The fixtures are libvirt 9.0's own output (see the comment opening each); the 2-cell host is a two-socket
machine with SMT and huge pages, the domains are three guests of it as Nova would define them.
"""

from __future__ import annotations

import subprocess
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from dpustack.contract.numa import HugePages, NumaCell
from dpustack.drivers.hypervisor import HypervisorDriver
from dpustack.drivers.hypervisor.domain_xml import PassedFunction
from dpustack.drivers.hypervisor.libvirt_lab import LabLibvirtHypervisorDriver
from dpustack.drivers.hypervisor.libvirt import (LibvirtHypervisorDriver, LibvirtHypervisorOptions,
                                                 parse_capabilities, parse_domain)
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver
from dpustack.drivers.hypervisor.topology import HostCpu, MemoryPart, offered_cells
from dpustack.drivers.options import parse_options
from dpustack.drivers.registry import INTERFACES
from dpustack.errors import DriverError, InvalidInput

FIXTURES = Path(__file__).parent / "fixtures" / "hypervisor"
PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
GIB_KIB = 1 << 20


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def domain(body: str, name: str = "guest") -> str:
    return f"<domain type='kvm'><name>{name}</name>{body}</domain>"


# ------------------------------------------------------------------ capabilities
@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.xml")))
def test_every_fixture_is_a_document_libvirts_schema_accepts(name):
    schema = "capability" if name.startswith("capabilities") else "domain"
    checked = subprocess.run(["virt-xml-validate", str(FIXTURES / name), schema], capture_output=True, text=True,
                             timeout=30, check=False)  # libvirt-clients, with xmllint (libxml2-utils)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_two_cell_host_gives_each_cell_its_memory_page_counts_and_cpus_with_their_siblings():
    cells = parse_capabilities(fixture("capabilities-2cell.xml"))

    assert [cell.id for cell in cells] == [0, 1]
    zero, one = cells
    assert (zero.memory_kib, one.memory_kib) == (32657864, 33027564)
    assert zero.pages == {4: 7378034, 2048: 512, 1048576: 2}
    assert one.pages == {4: 7732603, 2048: 1024, 1048576: 0}
    assert [cpu.id for cpu in zero.cpus] == [0, 1, 2, 3, 8, 9, 10, 11]
    assert [cpu.id for cpu in one.cpus] == [4, 5, 6, 7, 12, 13, 14, 15]
    assert zero.cpus[0] == HostCpu(id=0, siblings=frozenset({0, 8}))
    assert one.cpus[-1] == HostCpu(id=15, siblings=frozenset({7, 15}))


def test_the_recorded_capabilities_of_a_one_cell_machine_without_smt():
    (cell,) = parse_capabilities(fixture("capabilities-1cell-recorded.xml"))

    assert cell.id == 0 and cell.memory_kib == 5859064
    assert cell.pages == {4: 1464766, 2048: 0, 1048576: 0}
    assert cell.cpus == (HostCpu(0, frozenset({0})), HostCpu(1, frozenset({1})))


@pytest.mark.parametrize("original, broken, message", [
    ("<cell id='0'>", "<cell id='x'>", "cells/cell[1]/@id: 'x' is not a whole number"),
    ("<cell id='0'>", "<cell>", "cells/cell[1]/@id: missing"),
    ("<memory unit='KiB'>32657864", "<memory unit='parsecs'>32657864", "cell[1]/memory: unit 'parsecs' is none"),
    ("size='2048'>512<", "size='2048'>lots<", "cell[1]/pages[@size='2048']: 'lots' is not a whole number"),
    ("siblings='0,8'", "siblings='0-'", "cell[1]/cpus/cpu/@siblings: '0-' is not a CPU list"),
])
def test_a_capabilities_field_not_understood_is_named(original, broken, message):
    text = fixture("capabilities-2cell.xml").replace(original, broken, 1)

    with pytest.raises(DriverError) as caught:
        parse_capabilities(text)

    assert caught.value.message.startswith("the hypervisor's answer is not understood: capabilities: ")
    assert message in caught.value.message


def test_an_answer_that_is_no_xml_is_a_driver_error():
    with pytest.raises(DriverError, match=r"the hypervisor's answer \(capabilities\) is not XML"):
        parse_capabilities("<capabilities><host>")


# ------------------------------------------------------------------ domains
def test_a_pinned_two_cell_guest_has_each_guest_cell_on_its_memnode_and_pins_one_cpu_per_vcpu():
    usage = parse_domain(fixture("domain-pinned-two-cells.xml"))

    assert usage.name == "instance-0000002a"
    assert usage.memory == (MemoryPart(2 * GIB_KIB, frozenset({0}), 2048), MemoryPart(2 * GIB_KIB, frozenset({1}), 2048))
    assert usage.pinned_cpus == {2, 10, 6, 14}


@pytest.mark.parametrize("backing, default, pages", [
    ("<hugepages><page size='1' unit='G' nodeset='1'/><page size='2048'/></hugepages>", None, (2048, GIB_KIB, 2048)),
    ("<hugepages><page size='1048576' nodeset='0'/></hugepages>", 2048, (GIB_KIB, 2048, 2048)),
    ("<hugepages/>", 2048, (2048, 2048, 2048)),
    ("<source type='memfd'/>", 2048, (None, None, None)),
])
def test_the_huge_page_size_of_each_guest_cell_is_read_from_the_memory_backing(backing, default, pages):
    usage = parse_domain(domain(f"""
        <memory unit='MiB'>3072</memory><memoryBacking>{backing}</memoryBacking>
        <cpu><numa><cell id='0' cpus='0' memory='1024' unit='MiB'/><cell id='1' cpus='1' memory='1024' unit='MiB'/>
        </numa></cpu>"""), default)

    assert tuple(part.page_kib for part in usage.memory) == pages  # cell 0, cell 1, the memory outside cells


def test_numatune_memory_alone_binds_the_whole_guest():
    usage = parse_domain(fixture("domain-pinned-cell1.xml"))

    assert usage.memory == (MemoryPart(GIB_KIB, frozenset({1})),)
    assert usage.pinned_cpus == {7, 15}


def test_vcpus_that_float_over_several_cpus_pin_none_and_memory_without_numatune_is_unbound():
    usage = parse_domain(fixture("domain-floating.xml"))

    assert usage.memory == (MemoryPart(2 * GIB_KIB, frozenset()),)
    assert usage.pinned_cpus == frozenset()


def test_a_guest_cell_without_memnode_follows_the_guests_nodeset_and_memory_outside_guest_cells_too():
    usage = parse_domain(domain("""
        <memory unit='GiB'>3</memory>
        <numatune><memory mode='interleave' nodeset='0-1'/><memnode cellid='1' mode='strict' nodeset='1'/></numatune>
        <cpu><numa><cell id='0' cpus='0' memory='1' unit='GiB'/><cell id='1' cpus='1' memory='1024' unit='MiB'/></numa></cpu>
    """))

    assert usage.memory == (MemoryPart(GIB_KIB, frozenset({0, 1})), MemoryPart(GIB_KIB, frozenset({1})),
                            MemoryPart(GIB_KIB, frozenset({0, 1})))


@pytest.mark.parametrize("size, kib", [
    ("<memory>65536</memory>", 65536),  # no unit: KiB
    ("<memory unit='b'>67108864</memory>", 65536),
    ("<memory unit='bytes'>1000</memory>", 1),  # rounded up
    ("<memory unit='M'>64</memory>", 65536),
    ("<memory unit='MB'>64</memory>", 62500),
    ("<memory unit='G'>1</memory>", GIB_KIB),
    ("<memory unit='TiB'>1</memory>", 1 << 30),
])
def test_sizes_in_libvirts_units_are_read_in_kib(size, kib):
    assert parse_domain(domain(size)).memory == (MemoryPart(kib, frozenset()),)


@pytest.mark.parametrize("body, message", [
    ("", "domain 'guest': memory: missing"),
    ("<memory>lots</memory>", "domain 'guest': memory: 'lots' is not a whole number"),
    ("<memory>1</memory><cputune><vcpupin vcpu='0' cpuset='two'/></cputune>",
     "domain 'guest': cputune/vcpupin/@cpuset: 'two' is not a CPU list"),
    ("<memory>1</memory><numatune><memory nodeset='0-x'/></numatune>",
     "domain 'guest': numatune/memory/@nodeset: '0-x' is not a CPU list"),
    ("<memory>1</memory><cpu><numa><cell id='0' cpus='0'/></numa></cpu>",
     "domain 'guest': cpu/numa/cell[@id='0']/@memory: missing"),
])
def test_a_domain_field_not_understood_names_the_domain_and_the_field(body, message):
    with pytest.raises(DriverError) as caught:
        parse_domain(domain(body))

    assert message in caught.value.message


# ------------------------------------------------------------------ the host offered
def test_the_two_cell_host_with_three_guests_and_a_reservation_offers_what_is_left():
    cells = parse_capabilities(fixture("capabilities-2cell.xml"))
    guests = [parse_domain(fixture(name)) for name in
              ("domain-pinned-two-cells.xml", "domain-pinned-cell1.xml", "domain-floating.xml")]
    free = {0: {2048: 0, 1048576: 2}, 1: {2048: 1024, 1048576: 0}}  # getFreePages: the first guest took cell 0's

    offered = offered_cells(cells, free, guests, reserved_cpus="0,8", reserved_memory_mib=4096)

    assert offered == [
        NumaCell(id=0, cpus=[1, 2, 3, 9, 10, 11], memory_mib=32657864 // 1024 - 4096,
                 used_memory_mib=2048,  # the unbound guest's memory; the pinned guest's is in 2 MiB pages
                 pinned_cpus=[2, 10],
                 hugepages=[HugePages(size_kib=2048, total=512, free=0), HugePages(size_kib=1048576, total=2, free=2)]),
        NumaCell(id=1, cpus=[4, 5, 6, 7, 12, 13, 14, 15], memory_mib=33027564 // 1024,
                 used_memory_mib=1024, pinned_cpus=[6, 7, 14, 15],
                 hugepages=[HugePages(size_kib=2048, total=1024, free=1024),
                            HugePages(size_kib=1048576, total=0, free=0)]),
    ]


# ------------------------------------------------------------------ options and registration
def libvirt_options(table: dict | None) -> dict:
    return parse_options(LibvirtHypervisorOptions, table, where="hypervisor.libvirt",
                         required_by='[drivers] hypervisor = "libvirt"')


def test_the_options_reach_the_driver():
    driver = LibvirtHypervisorDriver(**libvirt_options({"uri": "qemu+tls://host-1/system", "reserved_cpus": "0-1,8",
                                                        "reserved_memory_mib": 2048}))

    assert (driver.uri, driver.reserved_cpus, driver.reserved_memory_mib) == ("qemu+tls://host-1/system", "0-1,8", 2048)


@pytest.mark.parametrize("table, field", [
    ({"uri": "qemu:///system", "reserved_cpus": "0-"}, "hypervisor.libvirt.reserved_cpus"),
    ({"uri": "qemu:///system", "reserved_cpus": "1,a"}, "hypervisor.libvirt.reserved_cpus"),
    ({"uri": "qemu:///system", "reserved_memory_mib": -1}, "hypervisor.libvirt.reserved_memory_mib"),
    ({"uri": ""}, "hypervisor.libvirt.uri"),
    ({}, "hypervisor.libvirt.uri"),
    ({"uri": "qemu:///system", "reserved_cpu": "0"}, "hypervisor.libvirt.reserved_cpu"),
])
def test_a_bad_option_names_its_field(table, field):
    with pytest.raises(InvalidInput) as caught:
        libvirt_options(table)

    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")


def test_the_table_is_required_when_the_driver_is_chosen():
    with pytest.raises(InvalidInput, match=r'^hypervisor.libvirt: required when \[drivers\] hypervisor = "libvirt"'):
        libvirt_options(None)


def test_a_bad_reserved_cpus_given_to_the_driver_itself_names_the_option():
    with pytest.raises(DriverError) as caught:
        LibvirtHypervisorDriver(uri="qemu:///system", reserved_cpus="3-1")

    assert caught.value.field == "reserved_cpus"
    assert caught.value.message.startswith("reserved_cpus: '3-1' is not a CPU list")


def test_the_hypervisor_concern_and_its_drivers_are_registered():
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["dpustack.drivers.hypervisor"]

    assert INTERFACES["hypervisor"] is HypervisorDriver
    assert {name: EntryPoint(name, value, "dpustack.drivers.hypervisor").load()
            for name, value in entry_points.items()} == {"memory": MemoryHypervisorDriver,
                                                         "libvirt": LibvirtHypervisorDriver,
                                                         "libvirt-lab": LabLibvirtHypervisorDriver}


def test_the_lab_variant_backs_functions_with_taps_and_sockets_and_gives_each_domain_its_command_channel(tmp_path):
    options = parse_options(LabLibvirtHypervisorDriver.options,
                            {"uri": "qemu+unix:///system?socket=/nowhere", "vhost_dir": "/srv/vhost",
                             "command_dir": "cmd"}, where="hypervisor.libvirt-lab", state_dir=tmp_path)
    lab = LabLibvirtHypervisorDriver(**options).lab_backing()
    net = PassedFunction("port-1", "0000:43:00.0", "net", slot=0, mac="fa:16:3e:00:00:01")
    disk = PassedFunction("vol-1", "0000:44:00.0", "storage", slot=1)
    assert lab.tap(net) == "tap2"  # the tap of the function's slot on the DPU, not of the guest's
    assert lab.socket(disk) == Path("/srv/vhost/vol-1.sock")
    uuid = "5B0C1C4E-7D1A-4A8E-9A51-3F1C2D4E5F60"
    assert lab.command_socket(uuid) == tmp_path / "cmd" / f"{uuid.lower()}.sock"
    assert (tmp_path / "cmd").is_dir()  # made for libvirt to create the socket in
    without = LabLibvirtHypervisorDriver(uri="qemu+unix:///system?socket=/nowhere", vhost_dir="/srv/vhost")
    assert without.lab_backing().command_socket is None
