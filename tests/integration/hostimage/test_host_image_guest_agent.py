"""A VM booting the host image runs Debian's QEMU guest agent on its virtio-serial channel, and the libvirt
hypervisor driver's ``set_password`` resets root's password through it (``virDomainSetUserPassword``: qemu-ga's
``guest-set-user-password``), as a VM node's agent does for ``POST /v1/instances/{ref}/admin-password``.

One VM for the module: a libvirt domain of the lab form of :mod:`dpustack.drivers.hypervisor.domain_xml` (its
boot volume a qemu-storage-daemon vhost-user-blk export, its NIC on the test namespace's tap0, its
``org.qemu.guest_agent.0`` channel where libvirt puts it) on a private libvirtd in that namespace, the metadata
service of conftest's ``network`` giving it a first password. The password set through the agent replaces
root's hash in ``/etc/shadow`` (read in a root shell on the serial console, libvirt's console as a user's
``server console``) and is then the one root logs in with; the old one is refused. A guest agent that does not
answer (stopped in the guest), a user the guest lacks and, after ``guest-shutdown`` powered it off, a VM that
is off are DriverErrors with libvirt's reason.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from dpustack.drivers.bmc.libvirt_console import DomainConsole
from dpustack.drivers.hypervisor.libvirt import LibvirtHypervisorDriver
from dpustack.drivers.hypervisor.domain_xml import (GUEST_AGENT_CHANNEL, DomainSpec, LabBacking, PassedFunction,
                                                     SerialConsole, assemble)
from dpustack.errors import DriverError
from dpustack.lab.host_image import HostImage
from dpustack.lab.host_init import step_lines
from dpustack.lab.libvirt_daemon import LIBVIRTD, LibvirtDaemon
from dpustack.libvirt_host import connect
from host_guest import HostNetwork
from serial_login import ConsoleReader
from storage_daemons import QSD, Daemon

HOSTNAME = "vm-agent-1"
FIRST_PASSWORD = "first-pa55"
NEW_PASSWORD = 'n3w:pa$$ "w0rd" |&'  # a colon: chpasswd splits user:password at the first one
READY_TIMEOUT = 180.0
AGENT_TIMEOUT = 60.0
OFF_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def served() -> tuple[dict, None]:
    return {"uuid": "7c1e4f2a-93b5-4d0e-8a61-5f2b9c3d7e10", "hostname": f"{HOSTNAME}.novalocal",
            "name": HOSTNAME, "admin_pass": FIRST_PASSWORD, "public_keys": {}}, None


@dataclass
class Vm:
    daemon: LibvirtDaemon
    domain: libvirt.virDomain
    driver: LibvirtHypervisorDriver
    console_log: Path
    launched: float

    def steps(self) -> list[dict]:
        return step_lines(self.console_log.read_text(errors="replace")) if self.console_log.exists() else []

    def wait_for_steps(self, names: set[str], timeout: float, *, after: int = 0) -> None:
        """Wait until the console has a step line of each of ``names`` (from the ``after``-th on)."""
        deadline = time.monotonic() + timeout
        while not names <= {step["step"] for step in self.steps()[after:]}:
            assert time.monotonic() < deadline, f"no {names} step lines within {timeout:g} s; console:\n" \
                                                f"{self.console_log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.1)

    def agent(self, command: str, timeout: int = 10, **arguments: object) -> dict:
        """One command to qemu-ga through libvirt; its ``return``."""
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        return json.loads(libvirt_qemu.qemuAgentCommand(self.domain, json.dumps(request), timeout, 0))["return"]


@pytest.fixture(scope="module")
def vm(host_image: HostImage, network: HostNetwork, libvirt_cache: Path, timings: dict[str, float]) -> Iterator[Vm]:
    for tool in (LIBVIRTD, QSD):
        assert Path(tool).exists(), f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu " \
                                    "qemu-system-x86"
    workdir = Path(tempfile.mkdtemp(prefix="qgavm-", dir="/tmp"))  # short: unix socket paths
    overlay, disk, console_log = workdir / "boot.qcow2", workdir / "boot.sock", workdir / "console.log"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(host_image.path), "-F", "raw", str(overlay)],
                   check=True)
    storage = Daemon(network.namespace, workdir, "qsd", [
        "--blockdev", f"driver=file,node-name=file0,filename={overlay}",
        "--blockdev", "driver=qcow2,node-name=boot,file=file0",
        "--export", f"type=vhost-user-blk,id=boot,node-name=boot,writable=on,addr.type=unix,addr.path={disk}"])
    daemon = LibvirtDaemon(workdir / "lv", network.namespace, cache=libvirt_cache)
    nic = network.subnets[0]
    spec = DomainSpec(name=f"qga-{secrets.token_hex(3)}", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=256,
                      functions=[PassedFunction("boot", "0000:42:00.0", "storage", slot=0, boot_order=1),
                                 PassedFunction("port-1", "0000:41:00.0", "net", slot=1, mac=nic.mac)],
                      console=SerialConsole(type="pty", log=str(console_log)), root_ports=4)
    xml = assemble(spec, "lab", LabBacking(tap=lambda function: nic.tap, socket=lambda function: disk))
    try:
        storage.start()
        daemon.start()
        domain = connect(daemon.uri).defineXML(xml)
        launched = time.monotonic()
        domain.create()
        machine = Vm(daemon, domain, LibvirtHypervisorDriver(uri=daemon.uri), console_log, launched)
        machine.wait_for_steps({"ready", "guest-agent"}, READY_TIMEOUT)
        timings["VM launch -> ready (guest agent)"] = time.monotonic() - launched
        yield machine
    finally:
        daemon.stop()  # QEMU with it
        storage.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_guest_agent_starts_on_its_channel_and_answers(vm, host_image, timings):
    steps = vm.steps()
    assert "failed" not in [step["step"] for step in steps], steps
    started = [step for step in steps if step["step"] == "guest-agent"]
    assert started == [{"step": "guest-agent", "port": f"/dev/virtio-ports/{GUEST_AGENT_CHANNEL}",
                        "device": started[0]["device"], "version": started[0]["version"]}]
    assert started[0]["device"].startswith("/dev/vport") and started[0]["version"].startswith("7.2.")
    assert host_image.guest_agent_packages[0].startswith("qemu-guest-agent=")

    asked, deadline = time.monotonic(), time.monotonic() + AGENT_TIMEOUT
    while True:  # libvirt talks to the agent once the guest has opened the port
        try:
            assert vm.agent("guest-ping") == {}
            break
        except libvirt.libvirtError as exc:
            assert time.monotonic() < deadline, f"qemu-ga never answered guest-ping: {exc}"
            time.sleep(0.5)
    timings["guest-agent line -> guest-ping answered"] = time.monotonic() - asked
    info = vm.agent("guest-info")
    assert info["version"] == started[0]["version"]
    enabled = {command["name"] for command in info["supported_commands"] if command["enabled"]}
    assert {"guest-ping", "guest-info", "guest-set-user-password", "guest-shutdown"} <= enabled


def _root_hash(reader: ConsoleReader) -> str:
    """root's password hash in the guest's /etc/shadow, read in the console's root shell."""
    printed = reader.run("echo ROOT-HASH=$(grep ^root: /etc/shadow | cut -d: -f2)=").decode(errors="replace")
    (found,) = re.findall(r"ROOT-HASH=(\$6\$[^=\s]+)=", printed)
    return found


def _sha512_crypt(password: str, salt: str) -> str:
    done = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_driver_sets_roots_password_through_the_agent_and_root_logs_in_with_it(vm, timings):
    reader = ConsoleReader(DomainConsole(vm.daemon.uri, vm.domain.name()))
    try:
        reader.shell(HOSTNAME, FIRST_PASSWORD)  # the metadata's password, set at boot
        first = _root_hash(reader)
        assert first == _sha512_crypt(FIRST_PASSWORD, first.split("$")[2])

        before = len(vm.steps())
        started = time.monotonic()
        vm.driver.set_password(vm.domain.UUIDString(), "root", NEW_PASSWORD)  # -> guest-set-user-password
        timings["driver set_password"] = time.monotonic() - started
        vm.wait_for_steps({"password"}, 10, after=before)  # chpasswd's line, on its way out of the console
        assert [step for step in vm.steps()[before:] if step["step"] == "password"] == [
            {"step": "password", "set": 1, "user": "root", "by": "chpasswd"}]
        new = _root_hash(reader)
        assert new != first and new == _sha512_crypt(NEW_PASSWORD, new.split("$")[2])

        with pytest.raises(DriverError, match="cannot set the password of 'nobody' in domain .* through its guest "
                                              "agent: .*child process has failed to set user password") as caught:
            vm.driver.set_password(vm.domain.UUIDString(), "nobody", NEW_PASSWORD)  # chpasswd says so, qemu-ga too
        assert NEW_PASSWORD not in caught.value.message
        reader.answer(f"{HOSTNAME} login: ".encode(), b"exit\r")
    finally:
        reader.detach()

    reader = ConsoleReader(DomainConsole(vm.daemon.uri, vm.domain.name()))
    try:
        reader.answer(f"{HOSTNAME} login: ".encode(), b"\r", repeat=True)
        reader.answer(b"Password: ", b"root\r")
        reader.answer(b"Login incorrect", FIRST_PASSWORD.encode() + b"\r")  # the metadata's, replaced
        reader.login(HOSTNAME, NEW_PASSWORD)
    finally:
        reader.detach()


def test_a_guest_agent_that_does_not_answer_is_a_driver_error_with_libvirts_reason(vm, timings):
    reader = ConsoleReader(DomainConsole(vm.daemon.uri, vm.domain.name()))
    try:
        reader.shell(HOSTNAME, NEW_PASSWORD)
        reader.run("kill -STOP $(pidof qemu-ga)")  # the agent's process stands still: nothing answers
        started = time.monotonic()
        try:
            with pytest.raises(DriverError, match="cannot set the password of 'root' in domain .* through its guest "
                                                  "agent: Guest agent is not responding") as caught:
                vm.driver.set_password(vm.domain.UUIDString(), "root", FIRST_PASSWORD)
            timings["set_password without an answering agent -> DriverError"] = time.monotonic() - started
            assert FIRST_PASSWORD not in caught.value.message
        finally:
            reader.run("kill -CONT $(pidof qemu-ga)")
        reader.answer(f"{HOSTNAME} login: ".encode(), b"exit\r")
    finally:
        reader.detach()
    assert vm.domain.info()[0] == libvirt.VIR_DOMAIN_RUNNING  # the VM runs on


def test_guest_shutdown_powers_the_vm_off(vm, timings):
    started = time.monotonic()
    vm.domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)  # qemu-ga runs /sbin/shutdown -P +0
    while vm.domain.info()[0] != libvirt.VIR_DOMAIN_SHUTOFF:
        assert time.monotonic() - started < OFF_TIMEOUT, f"the VM still runs {OFF_TIMEOUT:g} s after guest-shutdown"
        time.sleep(0.1)
    timings["guest-shutdown -> off"] = time.monotonic() - started
    assert vm.steps()[-1] == {"step": "shutdown"}
    with pytest.raises(DriverError, match=r"domain .* is off: setting a password needs a running guest"):
        vm.driver.set_password(vm.domain.UUIDString(), "root", NEW_PASSWORD)
