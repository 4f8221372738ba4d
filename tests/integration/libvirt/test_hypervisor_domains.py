"""The libvirt hypervisor driver's domain lifecycle against a real private libvirtd, with one real guest.

The guest is a VM as the agent will define it: ``domain_xml.assemble(spec, "lab", ...)`` with a storage
function in slot 0 (its boot disk: a qcow2 overlay of the lab host image, exported over vhost-user-blk by
qemu-storage-daemon) and a net function in slot 1 (``tap0`` of :func:`host_guest.host_network`'s namespace,
where DHCP and the metadata service answer), 256 MiB, 1 vCPU, TCG. libvirtd runs in that namespace
(:class:`dpustack.lab.libvirt_daemon.LibvirtDaemon`). What the guest does is read from its own console: the
step lines of the host image's init (``dpustack.lab.host_init``) in ttyS0's log, and a root login on the
console that :meth:`serial_console` gives.

One guest is booted for the whole module and the tests run in file order, each leaving it as the next one
expects. Times measured are printed at the end (run with ``-s``), and recorded in the session's timings.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from dpustack.agent.instance_runtime import VmRuntime
from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.hypervisor.domain_xml import (DomainSpec, LabBacking, PassedFunction, SerialConsole as ConsoleSpec,
                                                     assemble, function_element)
from dpustack.drivers.hypervisor.libvirt import LibvirtHypervisorDriver
from dpustack.errors import DriverError
from dpustack.lab import processes
from dpustack.lab.host_image import HostImage
from dpustack.lab.host_init import step_lines
from dpustack.lab.libvirt_daemon import LIBVIRTD, LibvirtDaemon
from dpustack.libvirt_host import connect
from host_guest import SUBNETS, host_network
from serial_login import ConsoleReader
from storage_daemons import QSD, Daemon

BOOT_TIMEOUT = 60.0
SEEN_TIMEOUT = 20.0
HOSTNAME = "hvdom"
PASSWORD = "hv-Pass-7"
LOGIN_PROMPT = f"{HOSTNAME} login: ".encode()
BOOT = PassedFunction("boot", "0000:41:00.0", "storage", slot=0, boot_order=1)
NIC0 = PassedFunction("nic0", "0000:42:00.0", "net", slot=1, mac=SUBNETS[0].mac)
NIC1 = PassedFunction("nic1", "0000:43:00.0", "net", slot=2, mac=SUBNETS[1].mac)
TAPS = {NIC0.id: SUBNETS[0].tap, NIC1.id: SUBNETS[1].tap}
TICKS = 25
TIMINGS: dict[str, float] = {}


def guest_bdf(slot: int) -> str:
    """Where the guest sees guest slot ``slot``: root port N is at ``pcie.0`` device N+1 and the firmware
    numbers the ports' buses in that order, so its device is at bus N+1."""
    return f"0000:{slot + 1:02x}:00.0"


@dataclass
class Host:
    """The namespace, its libvirtd and the driver on it, and the one guest's definition."""

    workdir: Path
    daemon: LibvirtDaemon
    driver: LibvirtHypervisorDriver
    uuid: str
    name: str
    xml: str
    console_log: Path
    lab: LabBacking
    readers: list[ConsoleReader] = field(default_factory=list)
    logged_in: bool = False

    def steps(self) -> list[dict]:
        return step_lines(self.console_log.read_text(errors="replace") if self.console_log.exists() else "")

    def count(self, name: str) -> int:
        return [step["step"] for step in self.steps()].count(name)

    def wait_for_step(self, name: str, count: int, timeout: float = BOOT_TIMEOUT) -> float:
        """Wait until the console log holds ``count`` step lines ``name``; the seconds it took."""
        started = time.monotonic()
        while self.count(name) < count:
            assert time.monotonic() - started < timeout, (
                f"{self.count(name)} of {count} '{name}' steps after {timeout:g} s; steps: "
                f"{[step['step'] for step in self.steps()]}; qemu log: {self.qemu_log()[-1500:]}")
            time.sleep(0.05)
        return time.monotonic() - started

    def qemu_pid(self) -> int | None:
        return self.daemon.qemu_pids().get(self.name)

    def qemu_log(self) -> str:
        path = self.daemon.qemu_log(self.name)
        return path.read_text(errors="replace") if path.exists() else ""

    def definition(self) -> ET.Element:
        connection = connect(self.daemon.uri)
        try:
            return ET.fromstring(connection.lookupByUUIDString(self.uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        finally:
            connection.close()

    def live(self) -> ET.Element:
        connection = connect(self.daemon.uri)
        try:
            return ET.fromstring(connection.lookupByUUIDString(self.uuid).XMLDesc(0))
        finally:
            connection.close()

    def files(self) -> list[Path]:
        """The daemon's files (its logs left out) that name the domain: its definition, its runtime state."""
        return sorted(path for path in self.daemon.dir.rglob("*")
                      if self.name in path.name and not {"log", "cache"} & set(path.relative_to(self.daemon.dir).parts))

    def reader(self) -> ConsoleReader:
        """A new reader of the console :meth:`serial_console` gives (the last one is let go)."""
        for old in self.readers:
            old.detach()
        self.readers.append(ConsoleReader(self.driver.serial_console(self.uuid)))
        self.logged_in = False
        return self.readers[-1]

    def shell(self) -> ConsoleReader:
        """The reader of the last console, logged in as root (logging in if it is not)."""
        reader = self.readers[-1] if self.readers else self.reader()
        if not self.logged_in:
            reader.shell(HOSTNAME, PASSWORD)
            self.logged_in = True
        return reader

    def logout(self) -> None:
        self.readers[-1].answer(LOGIN_PROMPT, b"exit\r")
        self.logged_in = False


def aliases(domain: ET.Element) -> set[str]:
    return {element.find("alias").get("name") for element in domain.find("devices")
            if element.tag in ("interface", "disk") and element.find("alias") is not None}


def ticks(output: bytes) -> list[int]:
    """The numbers of the TICK lines in ``output``, in order."""
    return [int(number) for number in re.findall(rb"TICK-(\d+)\r", output)]


def timed(name: str, started: float) -> float:
    TIMINGS[name] = time.monotonic() - started
    return TIMINGS[name]


@pytest.fixture(scope="module")
def host(host_image: HostImage, libvirt_cache: Path, timings: dict[str, float]) -> Iterator[Host]:
    for tool in (LIBVIRTD, QSD):
        assert Path(tool).exists(), f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu " \
                                    "qemu-system-x86"
    module_started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hvdom-", dir="/tmp"))  # short: unix socket paths
    metadata = {"uuid": str(uuid_module.uuid4()), "hostname": HOSTNAME, "name": HOSTNAME, "admin_pass": PASSWORD}
    try:
        with host_network(metadata, None) as network:
            overlay, disk = workdir / "boot.qcow2", workdir / "boot.sock"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(host_image.path), "-F", "raw",
                            str(overlay)], check=True)
            storage = Daemon(network.namespace, workdir, "qsd", [
                "--blockdev", f"driver=file,node-name=file0,filename={overlay}",
                "--blockdev", "driver=qcow2,node-name=boot,file=file0",
                "--export", f"type=vhost-user-blk,id=boot,node-name=boot,writable=on,addr.type=unix,addr.path={disk}"])
            daemon = LibvirtDaemon(workdir / "lv", network.namespace, cache=libvirt_cache)
            try:
                storage.start()
                started = time.monotonic()
                daemon.start()
                timed("libvirtd start", started)
                console_log = workdir / "console.log"
                lab = LabBacking(tap=lambda function: TAPS[function.id], socket=lambda function: disk)
                spec = DomainSpec(name=f"hvdom-{secrets.token_hex(3)}", uuid=metadata["uuid"], vcpus=1,
                                  memory_mib=256, functions=[BOOT, NIC0], console=ConsoleSpec(log=str(console_log)))
                yield Host(workdir, daemon, LibvirtHypervisorDriver(uri=daemon.uri), spec.uuid, spec.name,
                           assemble(spec, "lab", lab), console_log, lab)
            finally:
                daemon.stop()  # kills any QEMU it left
                storage.kill()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        TIMINGS["module, all told"] = time.monotonic() - module_started
        timings.update({f"hvdom {name}": seconds for name, seconds in TIMINGS.items()})
        print("\nHVDOM-TIMINGS " + ", ".join(f"{name}: {seconds:.2f} s" for name, seconds in TIMINGS.items()))


# ------------------------------------------------------------ defining, before the guest runs
def test_define_is_idempotent_and_refuses_another_domain_with_that_uuid(host: Host):
    assert host.driver.state(host.uuid) == DomainState.MISSING
    started = time.monotonic()
    host.driver.define(host.uuid, host.xml)
    timed("define", started)
    host.driver.define(host.uuid.upper(), host.xml)  # the same XML again: nothing to do

    assert host.driver.state(host.uuid) == DomainState.OFF
    assert host.driver.domains() == [host.uuid]
    assert aliases(host.definition()) == {"ua-boot", "ua-nic0"}
    assert host.files() == [host.daemon.dir / "etc/qemu" / f"{host.name}.xml"]  # persistent
    bigger = host.xml.replace("<memory unit=\"MiB\">256</memory>", "<memory unit=\"MiB\">512</memory>")
    assert bigger != host.xml
    with pytest.raises(DriverError, match=f"domain {host.uuid} is defined already \\('{host.name}'\\), from other XML"):
        host.driver.define(host.uuid, bigger)
    assert host.definition().findtext("memory") == str(256 * 1024)


def test_libvirts_refusals_come_with_its_reason_and_missing_domains_are_errors_but_for_state(host: Host):
    other = str(uuid_module.uuid4())
    with pytest.raises(DriverError, match=f"cannot define domain {other} \\('{host.name}'\\): .*already exists"):
        host.driver.define(other, host.xml.replace(host.uuid, other))  # libvirt's: the name is taken
    for operation in (host.driver.start, host.driver.stop, host.driver.pause, host.driver.reboot,
                      host.driver.serial_console):
        with pytest.raises(DriverError, match=f"has no domain {other}"):
            operation(other)
    assert host.driver.state(other) == DomainState.MISSING
    host.driver.undefine(other)  # nothing to do


def test_domains_lists_only_what_the_driver_defined(host: Host):
    foreign = f"<domain type='qemu'><name>{host.name}-foreign</name><memory unit='MiB'>32</memory>" \
              "<os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    connection = connect(host.daemon.uri)
    try:
        domain = connection.defineXML(foreign)
        try:
            assert host.driver.domains() == [host.uuid]
            assert host.driver.state(domain.UUIDString()) == DomainState.OFF
            with pytest.raises(DriverError, match="from other XML"):  # defined by someone else
                host.driver.define(domain.UUIDString(), foreign)
        finally:
            domain.undefine()
    finally:
        connection.close()


# --------------------------------------------------------------------- the guest
def test_start_boots_the_guest_from_its_storage_function_at_slot_0(host: Host):
    started = time.monotonic()
    host.driver.start(host.uuid)
    timed("start call", started)
    host.driver.start(host.uuid)  # running: nothing to do
    assert host.driver.state(host.uuid) == DomainState.RUNNING
    host.wait_for_step("ready", 1)
    timed("start -> ready", started)

    steps = {step["step"]: step for step in host.steps()}
    assert steps["boot"]["disk"] == "/dev/vda" and steps["boot"]["bdf"] == guest_bdf(BOOT.slot)
    assert (steps["dhcp"]["mac"], steps["dhcp"]["address"]) == (NIC0.mac, f"{SUBNETS[0].guest}/24")
    assert steps["hostname"]["hostname"] == HOSTNAME
    assert "failed" not in steps, steps.get("failed")


def test_pause_freezes_the_guest_and_unpause_lets_it_go_on_where_it_was(host: Host):
    started = time.monotonic()
    shell = host.shell()
    timed("console attach -> logged in as root", started)
    since = len(shell.seen)
    shell.run(f"(i=0; while [ $i -lt {TICKS} ]; do echo TICK-$i; i=$((i + 1)); sleep 0.2; done) &")
    shell.wait(lambda output: b"TICK-2\r" in output, since)

    started = time.monotonic()
    host.driver.pause(host.uuid)
    timed("pause", started)
    host.driver.pause(host.uuid)  # paused: nothing to do
    assert host.driver.state(host.uuid) == DomainState.PAUSED
    host.driver.start(host.uuid)  # a start leaves a paused domain paused
    assert host.driver.state(host.uuid) == DomainState.PAUSED
    time.sleep(0.3)  # what the guest wrote before it stopped has arrived
    logged, printed = host.console_log.stat().st_size, len(shell.seen)
    time.sleep(1.5)
    assert (host.console_log.stat().st_size, len(shell.seen)) == (logged, printed)  # not a tick more
    assert ticks(shell.seen[since:]) != list(range(TICKS))

    started = time.monotonic()
    host.driver.unpause(host.uuid)
    host.driver.unpause(host.uuid)  # running: nothing to do
    assert host.driver.state(host.uuid) == DomainState.RUNNING
    shell.wait(lambda output: f"TICK-{TICKS - 1}\r".encode() in output, since)
    timed("unpause -> the guest's loop has ticked to its end", started)
    assert ticks(shell.seen[since:]) == list(range(TICKS))  # none lost, none twice: it went on where it was


def test_a_nic_hot_attached_into_slot_2_gets_its_lease_at_that_slots_bdf(host: Host):
    xml = ET.tostring(function_element(NIC1, "lab", host.lab), encoding="unicode")
    leases = host.count("dhcp")
    started = time.monotonic()
    host.driver.attach(host.uuid, xml, NIC1.id)
    timed("attach NIC (call)", started)
    host.driver.attach(host.uuid, xml, NIC1.id)  # the same device again: nothing to do
    host.wait_for_step("dhcp", leases + 1, SEEN_TIMEOUT)
    timed("attach NIC -> dhcp step in guest", started)

    lease = [step for step in host.steps() if step["step"] == "dhcp"][-1]
    assert (lease["mac"], lease["address"]) == (NIC1.mac, f"{SUBNETS[1].guest}/24")
    assert "ua-nic1" in aliases(host.live()) and "ua-nic1" in aliases(host.definition())
    shell = host.shell()
    output = shell.run(f"readlink -f /sys/class/net/{lease['nic']}/device")
    found = re.search(rb"/([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/virtio\d+\r", output)
    assert found is not None, output
    assert found.group(1).decode() == guest_bdf(NIC1.slot)
    host.logout()


def test_a_nic_that_cannot_be_attached_leaves_the_domain_as_it_was(host: Host):
    broken = PassedFunction("nic9", "0000:4a:00.0", "net", slot=9, mac="52:54:00:d5:00:09")
    xml = ET.tostring(function_element(broken, "lab", LabBacking(tap=lambda _: "tap-missing", socket=host.lab.socket)),
                      encoding="unicode")
    with pytest.raises(DriverError, match="cannot attach 'nic9' to domain"):
        host.driver.attach(host.uuid, xml, broken.id)
    assert "ua-nic9" not in aliases(host.live()) | aliases(host.definition())
    taken = ET.tostring(function_element(PassedFunction("nic1", "0000:43:00.0", "net", slot=3, mac=NIC1.mac), "lab",
                                         host.lab), encoding="unicode")
    with pytest.raises(DriverError, match="has another device 'nic1' already"):
        host.driver.attach(host.uuid, taken, "nic1")


def test_detach_returns_once_the_guest_let_the_nic_go(host: Host):
    gone = host.count("nic-gone")
    started = time.monotonic()
    host.driver.detach(host.uuid, NIC1.id)
    timed("detach NIC (returns: gone from the live XML)", started)

    assert "ua-nic1" not in aliases(host.live()) | aliases(host.definition())
    host.wait_for_step("nic-gone", gone + 1, SEEN_TIMEOUT)
    timed("detach NIC -> nic-gone step in guest", started)
    host.driver.detach(host.uuid, NIC1.id)  # gone: nothing to do


def test_a_soft_stop_powers_the_guest_off_by_its_power_button_and_a_paused_one_is_resumed_for_it(host: Host):
    qemu = host.qemu_pid()
    host.driver.pause(host.uuid)
    with pytest.raises(DriverError, match="is paused and cannot hear the power button"):
        host.driver.stop(host.uuid, soft=True, timeout=30)
    runtime = VmRuntime(host.driver, stop_timeout=30)  # what the agent of a VM node stops it with
    assert (runtime.power_state(host.uuid), runtime.paused(host.uuid)) == ("on", True)

    started = time.monotonic()
    runtime.power_off(host.uuid)  # unpause, then the soft stop
    timed("stop of a paused VM (unpause, ACPI) -> off", started)

    assert host.driver.state(host.uuid) == DomainState.OFF
    assert host.count("poweroff") == 1 and host.count("shutdown") == 1  # its OS shut down: no plug pulled
    assert host.qemu_pid() is None and processes.run_state(qemu) in (None, "Z")
    host.driver.stop(host.uuid, soft=True)  # off: nothing to do
    for operation in (host.driver.pause, host.driver.unpause):
        with pytest.raises(DriverError, match="is off"):
            operation(host.uuid)
    with pytest.raises(DriverError, match="is off: a soft reboot needs a running guest"):
        host.driver.reboot(host.uuid, soft=True)


def test_while_off_attach_and_detach_change_the_definition_only(host: Host):
    xml = ET.tostring(function_element(NIC1, "lab", host.lab), encoding="unicode")
    host.driver.attach(host.uuid, xml, NIC1.id)
    assert "ua-nic1" in aliases(host.definition()) and host.driver.state(host.uuid) == DomainState.OFF
    started = time.monotonic()
    host.driver.detach(host.uuid, NIC1.id)
    timed("detach while off", started)
    assert aliases(host.definition()) == {"ua-boot", "ua-nic0"}


def test_start_again_then_a_hard_reboot_resets_the_same_qemu(host: Host):
    started = time.monotonic()
    host.driver.start(host.uuid)
    host.wait_for_step("ready", 2)
    timed("second start -> ready", started)
    qemu = host.qemu_pid()

    started = time.monotonic()
    host.driver.reboot(host.uuid, soft=False)
    host.wait_for_step("ready", 3)
    timed("hard reboot (reset) -> ready", started)
    assert host.qemu_pid() == qemu and host.driver.state(host.uuid) == DomainState.RUNNING
    assert host.count("shutdown") == 1  # a reset: the guest never went down by itself


def test_a_soft_reboot_goes_down_by_the_power_button_and_comes_up_in_the_same_qemu(host: Host):
    qemu = host.qemu_pid()
    started = time.monotonic()
    host.driver.reboot(host.uuid, soft=True)
    host.wait_for_step("ready", 4)
    timed("soft reboot (ACPI) -> ready", started)

    assert host.count("poweroff") == 2 and host.count("shutdown") == 2
    assert host.qemu_pid() == qemu and host.driver.state(host.uuid) == DomainState.RUNNING


def test_the_serial_console_shows_what_the_guest_prints(host: Host):
    started = time.monotonic()
    reader = host.reader()
    since = len(reader.seen)
    reader.answer(LOGIN_PROMPT, b"\r", repeat=True)
    timed("serial console attach -> login prompt", started)
    assert b"dpustack lab host" in reader.seen[since:]  # /etc/issue, which getty prints before its prompt


def test_a_hard_stop_destroys_qemu_at_once(host: Host):
    qemu = host.qemu_pid()
    started = time.monotonic()
    host.driver.stop(host.uuid, soft=False)
    timed("hard stop (destroy)", started)

    assert host.driver.state(host.uuid) == DomainState.OFF
    assert host.qemu_pid() is None and processes.run_state(qemu) in (None, "Z")
    host.driver.stop(host.uuid, soft=False)  # off: nothing to do


def test_undefine_of_a_running_domain_leaves_nothing(host: Host):
    host.driver.start(host.uuid)
    qemu = host.qemu_pid()
    assert qemu is not None
    running = host.files()
    assert len(running) > 1, running  # its definition and what libvirt keeps of the running QEMU
    for reader in host.readers:
        reader.detach()
    started = time.monotonic()
    host.driver.undefine(host.uuid)
    timed("undefine a running domain", started)

    assert host.driver.state(host.uuid) == DomainState.MISSING and host.driver.domains() == []
    assert host.qemu_pid() is None and processes.run_state(qemu) in (None, "Z")
    connection = connect(host.daemon.uri)
    try:
        assert connection.listAllDomains(0) == []
    finally:
        connection.close()
    assert host.files() == []
    host.driver.undefine(host.uuid)  # gone: nothing to do


def test_a_transient_domain_is_undefined_by_destroying_it(host: Host):
    transient = str(uuid_module.uuid4())
    xml = f"<domain type='qemu'><name>{host.name}-transient</name><uuid>{transient}</uuid>" \
          "<memory unit='MiB'>32</memory><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    connection = connect(host.daemon.uri)
    try:
        connection.createXML(xml)  # runs in SeaBIOS: no boot device
        try:
            assert host.driver.state(transient) == DomainState.RUNNING
            host.driver.undefine(transient)
            assert host.driver.state(transient) == DomainState.MISSING
        finally:
            if host.driver.state(transient) != DomainState.MISSING:
                connection.lookupByUUIDString(transient).destroy()
    finally:
        connection.close()
