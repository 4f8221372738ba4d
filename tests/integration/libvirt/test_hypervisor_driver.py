"""The libvirt hypervisor driver against a real private libvirtd in a namespace of its own.

What the driver reports is checked against what the kernel says of this machine: its CPUs, and each
cell's memory from ``/sys/devices/system/node/node<N>/meminfo``, which libvirt reads. That figure, not
``/proc/meminfo``'s MemTotal, is the one to compare with: on a machine whose memory the kernel
initializes lazily (this project's machines: Firecracker guests booted with ``deferred_init=lazy``) a
node's MemTotal starts well below the machine's and grows as memory is first touched, so it is read
before and after, and the machine's MemTotal only bounds it. A guest that stays in SeaBIOS (no boot
device, TCG) then shows its pinned CPU and its memory as used, and nothing once it is off.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from dpustack.drivers.hypervisor.libvirt import LibvirtHypervisorDriver
from dpustack.errors import DriverError
from dpustack.lab import libvirt_daemon
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.libvirt_host import connect
from netns import namespaces

QEMU = "/usr/bin/qemu-system-x86_64"
RESERVED_CPUS = "0"
RESERVED_MEMORY_MIB = 512
GUEST_MEMORY_MIB = 64


@dataclass
class Host:
    daemon: LibvirtDaemon
    driver: LibvirtHypervisorDriver
    workdir: Path


@pytest.fixture(scope="module")
def host(libvirt_cache: Path) -> Iterator[Host]:
    for tool in (libvirt_daemon.LIBVIRTD, QEMU):
        assert Path(tool).exists(), f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu " \
                                    "qemu-system-x86"
    workdir = Path(tempfile.mkdtemp(prefix="hvd-", dir="/tmp"))  # short: the socket path
    try:
        with namespaces("hvd") as names:
            daemon = LibvirtDaemon(workdir / "lv", names["hvd"], cache=libvirt_cache)
            try:
                daemon.start()
                yield Host(daemon, LibvirtHypervisorDriver(uri=daemon.uri, reserved_cpus=RESERVED_CPUS,
                                                           reserved_memory_mib=RESERVED_MEMORY_MIB), workdir)
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def node_memory_mib() -> dict[int, int]:
    """Each NUMA node's MemTotal as the kernel gives it now, in whole MiB."""
    found = {}
    for meminfo in Path("/sys/devices/system/node").glob("node*/meminfo"):
        kib = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read_text())
        found[int(meminfo.parent.name.removeprefix("node"))] = int(kib.group(1)) // 1024
    return found


def machine_memory_mib() -> int:
    return int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1)) // 1024


def guest_xml(name: str, cpu: int) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{GUEST_MEMORY_MIB}</memory>
  <vcpu placement='static'>1</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='{cpu}'/></cputune>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><emulator>{QEMU}</emulator></devices>
</domain>"""


def test_the_driver_reaches_the_daemon(host: Host):
    host.driver.validate()


def test_the_topology_is_this_machines_less_the_reservation(host: Host):
    before = node_memory_mib()
    cells = host.driver.topology()
    after = node_memory_mib()

    assert [cell.id for cell in cells] == sorted(before)
    assert sorted(cpu for cell in cells for cpu in cell.cpus) == sorted(set(range(os.cpu_count())) - {0})
    for index, cell in enumerate(cells):
        reserved = RESERVED_MEMORY_MIB if index == 0 else 0  # taken from cell 0 first
        assert before[cell.id] - reserved <= cell.memory_mib <= after[cell.id] - reserved
        assert (cell.used_memory_mib, cell.pinned_cpus) == (0, [])
        assert all(pages.size_kib > 4 and pages.free <= pages.total for pages in cell.hugepages)
    assert sum(cell.memory_mib for cell in cells) <= machine_memory_mib() - RESERVED_MEMORY_MIB


def test_dedicated_cpus_split_each_cell_of_this_machine_and_a_reserved_one_is_refused(host: Host):
    last = os.cpu_count() - 1
    driver = LibvirtHypervisorDriver(uri=host.daemon.uri, reserved_cpus=RESERVED_CPUS, dedicated_cpus=str(last))

    cells = driver.topology()

    assert [(cell.id, cell.dedicated_cpus) for cell in cells] == [
        (cell.id, [last] if last in cell.cpus else []) for cell in cells]
    assert sorted(cpu for cell in cells for cpu in cell.shared_cpus) == list(range(1, last))
    assert all(cell.dedicated_cpus is None for cell in host.driver.topology())  # no option: no split
    with pytest.raises(DriverError) as refused:
        LibvirtHypervisorDriver(uri=host.daemon.uri, reserved_cpus=RESERVED_CPUS, dedicated_cpus="0").topology()
    assert refused.value.field == "dedicated_cpus" and "CPU 0 is reserved for the host" in refused.value.message


def test_a_running_guest_pinned_to_a_cpu_shows_its_cpu_and_memory_as_used_until_it_is_off_or_ignored(host: Host):
    started = time.monotonic()
    cpu = max(cpu for cell in host.driver.topology() for cpu in cell.cpus)
    connection = connect(host.daemon.uri)
    try:
        guest = connection.defineXML(guest_xml("hvd-pinned", cpu))
        try:
            guest.create()
            used = {cell.id: cell for cell in host.driver.topology()}
            as_own_instance = host.driver.topology(ignore=[guest.UUIDString().upper()])
            guest.destroy()
            unused = host.driver.topology()
        finally:
            if guest.isActive():
                guest.destroy()
            guest.undefine()
    finally:
        connection.close()

    assert used[0].used_memory_mib == GUEST_MEMORY_MIB  # numatune binds it to cell 0
    assert [cell.id for cell in used.values() if cpu in cell.pinned_cpus] == \
        [cell.id for cell in used.values() if cpu in cell.cpus]
    assert all(cell.used_memory_mib == 0 and cell.pinned_cpus == [] for cell in unused)  # defined, not running
    # a domain that is one of the node's instances is the controller's claims' to count, not the host's usage
    assert all(cell.used_memory_mib == 0 and cell.pinned_cpus == [] for cell in as_own_instance)
    assert time.monotonic() - started < 10


def test_an_off_domain_is_defined_again_with_more_vcpus_and_memory_and_a_running_one_is_not(host: Host):
    cpu = max(cpu for cell in host.driver.topology() for cpu in cell.cpus)
    uuid, foreign = str(uuid_module.uuid4()), None
    small = guest_xml("hvd-resize", cpu)
    large = small.replace(f"<memory unit='MiB'>{GUEST_MEMORY_MIB}</memory>",
                          f"<memory unit='MiB'>{2 * GUEST_MEMORY_MIB}</memory>").replace(
        "<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>")
    connection = connect(host.daemon.uri)
    host.driver.define(uuid, small)
    try:
        host.driver.redefine(uuid, large)
        host.driver.redefine(uuid, large)  # the same again: nothing to do

        xml = ET.fromstring(connection.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert (xml.findtext("vcpu"), xml.findtext("memory")) == ("2", str(2 * GUEST_MEMORY_MIB * 1024))  # KiB
        host.driver.start(uuid)  # stays in SeaBIOS: no boot device
        with pytest.raises(DriverError, match="is running: stop it to define it again"):
            host.driver.redefine(uuid, small)
        host.driver.stop(uuid, soft=False)
        foreign = connection.defineXML(guest_xml("hvd-foreign", cpu))
        with pytest.raises(DriverError, match="was not defined by dpustack"):
            host.driver.redefine(foreign.UUIDString(), guest_xml("hvd-foreign", cpu))
    finally:
        host.driver.undefine(uuid)
        if foreign is not None:
            foreign.undefine()
        connection.close()


def test_a_hypervisor_that_is_not_there_is_a_driver_error_naming_its_uri(host: Host):
    uri = f"qemu+unix:///system?socket={host.workdir}/gone/libvirt-sock"
    driver = LibvirtHypervisorDriver(uri=uri)

    with pytest.raises(DriverError, match=re.escape(f"cannot connect to the hypervisor at {uri}: ")):
        driver.validate()
    with pytest.raises(DriverError, match=re.escape(uri)):
        driver.topology()


def test_libvirts_refusals_are_not_printed_on_stderr(host: Host, capfd: pytest.CaptureFixture[str]):
    with pytest.raises(DriverError):
        LibvirtHypervisorDriver(uri=f"qemu+unix:///system?socket={host.workdir}/gone/sock").validate()

    assert "libvirt" not in capfd.readouterr().err
