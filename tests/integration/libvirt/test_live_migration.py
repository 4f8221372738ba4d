"""Live migration of a running VM between two real libvirtds, through the agent's VmRuntime on each side.

One namespace (:func:`host_guest.host_network`: tap0 with DHCP and the metadata service) holds everything
of two VM nodes: for each, a private libvirtd (:class:`LibvirtDaemon`) and a DPU qemu-storage-daemon driven
by the ``qsd`` storage driver, which exports the boot volume, an NBD export of a third daemon (the storage
node, a qcow2 overlay of the lab host image), as vhost-user-blk on the node's own socket. The guest is a
domain of the ``libvirt-lab`` driver as the agent defines it (``VmRuntime.define``): the boot volume's
storage function in slot 0, a NIC on tap0 in slot 1, the lab's command channel on ttyS1 (where the guest's
uptime and files are read).

The move, as the controller will run it: the source unplugs the NIC (``prepare_live_migration``), the
target's DPU exports the volume too, the target builds its XML (``incoming_xml``: its own socket, no NIC),
the source migrates (``migrate_live``), the target plugs the NIC into its old slot
(``receive_live_migration``). One guest for the module, tests in file order: an abort and a timeout leave it
on the source (its NIC plugged back), then it moves. Numbers are printed (``-s``) and kept in the session's
timings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid as uuid_module
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from dpustack.agent.instance_runtime import VmRuntime
from dpustack.agent.instance_runtime.base import InstanceFunction
from dpustack.contract.instances import BuildRequest
from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.hypervisor.libvirt_lab import LabLibvirtHypervisorDriver, command_socket
from dpustack.drivers.hypervisor.migration import MigrationResult, MigrationTarget
from dpustack.drivers.storage.qsd import QsdStorageDriver
from dpustack.errors import DriverError
from dpustack.lab import guest_agent
from dpustack.lab.host_image import HostImage
from dpustack.lab.libvirt_daemon import LIBVIRTD, LibvirtDaemon
from dpustack.libvirt_host import connect
from host_guest import SUBNETS, host_network
from storage_daemons import QSD, Daemon, DpuDaemon

HOSTNAME = "hlive"
READY_TIMEOUT = 120.0
LEASE_TIMEOUT = 60.0
SLOW_MIB = 1  # MiB/s: a migration that takes long enough to be aborted
BOOT = InstanceFunction("boot", "storage", "0000:42:00.0", bootable=True)
NIC = InstanceFunction("nic0", "net", "0000:41:00.0", mac=SUBNETS[0].mac)  # slot 0 of the lab DPU: tap0
VOLUME = "vol-boot"
TIMINGS: dict[str, float] = {}


@dataclass
class Node:
    """One VM node: its libvirtd, its DPU's storage driver, the runtime over its hypervisor driver."""

    daemon: LibvirtDaemon
    storage: QsdStorageDriver
    driver: LabLibvirtHypervisorDriver
    runtime: VmRuntime
    commands: Path  # the command channels' directory

    def domain(self, uuid: str) -> libvirt.virDomain | None:
        connection = connect(self.daemon.uri)
        try:
            return connection.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return None


@dataclass
class Pair:
    source: Node
    target: Node
    request: BuildRequest
    volume_uri: str
    guest: str  # the guest's address on tap0
    namespace: str
    migration_uri: str

    @property
    def uuid(self) -> str:
        return self.request.uuid

    def run(self, node: Node, command: str) -> str:
        """A shell command in the guest, over the command channel of ``node``'s QEMU; its output."""
        status, output = guest_agent.run(command_socket(node.commands, self.uuid), command, timeout=20,
                                         ready_timeout=READY_TIMEOUT)
        assert status == 0, f"`{command}` in the guest: status {status}: {output!r}"
        return output.decode(errors="replace")

    def uptime(self, node: Node) -> float:
        return float(self.run(node, "cat /proc/uptime").split()[0])

    def answers_ping(self) -> bool:
        return subprocess.run(["ip", "netns", "exec", self.namespace, "ping", "-c", "1", "-W", "1", self.guest],
                              capture_output=True).returncode == 0

    def wait_for_ping(self, timeout: float = LEASE_TIMEOUT) -> float:
        started = time.monotonic()
        while not self.answers_ping():
            assert time.monotonic() - started < timeout, f"the guest does not answer pings {timeout:g} s on"
        return time.monotonic() - started

    def target_xml(self) -> MigrationTarget:
        slots = self.source.runtime.layout(self.uuid)
        xml = self.target.runtime.incoming_xml(self.request, [BOOT], slots)
        return MigrationTarget(uri=self.target.daemon.uri, xml=xml, migration_uri=self.migration_uri)


def timed(name: str, started: float) -> float:
    TIMINGS[name] = time.monotonic() - started
    return TIMINGS[name]


@pytest.fixture(scope="module")
def pair(host_image: HostImage, libvirt_cache: Path, timings: dict[str, float]) -> Iterator[Pair]:
    for tool in (LIBVIRTD, QSD):
        assert Path(tool).exists(), f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu " \
                                    "qemu-system-x86"
    workdir = Path(tempfile.mkdtemp(prefix="hlive-", dir="/tmp"))  # short: unix socket paths
    request = BuildRequest(uuid=str(uuid_module.uuid4()), name=HOSTNAME,
                           flavor={"name": "vm.tiny", "vcpus": 1, "ram": 256},
                           networks=[{"port_id": NIC.id, "mac": NIC.mac}],
                           volumes=[{"volume_id": VOLUME, "uri": "nbd://storage/vol-boot", "bootable": True}])
    metadata = {"uuid": request.uuid, "hostname": HOSTNAME, "name": HOSTNAME, "admin_pass": "hlive-Pass-1"}
    started = []
    try:
        with host_network(metadata, None) as network:
            overlay, nbd = workdir / "boot.qcow2", workdir / "nbd.sock"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(host_image.path), "-F", "raw",
                            str(overlay)], check=True)
            storage_node = Daemon(network.namespace, workdir, "storage", [
                "--blockdev", f"driver=file,node-name=file0,filename={overlay}",
                "--blockdev", "driver=qcow2,node-name=boot,file=file0",
                "--nbd-server", f"addr.type=unix,addr.path={nbd}",
                "--export", f"type=nbd,id=boot,node-name=boot,name={VOLUME},writable=on"])
            storage_node.start()
            started.append(storage_node)
            nodes = []
            for n in (1, 2):
                dpu_dir = workdir / f"dpu{n}"
                dpu_dir.mkdir()
                dpu = DpuDaemon(network.namespace, dpu_dir)
                dpu.start()
                started.append(dpu)
                daemon = LibvirtDaemon(workdir / f"lv{n}", network.namespace, cache=libvirt_cache)
                started.append(daemon)
                daemon_started = time.monotonic()
                daemon.start()
                timed(f"libvirtd {n} start", daemon_started)
                driver = LabLibvirtHypervisorDriver(uri=daemon.uri, vhost_dir=dpu_dir / "vhost",
                                                    command_dir=workdir / f"cmd{n}")
                nodes.append(Node(daemon, QsdStorageDriver(qmp_socket=dpu.qmp_socket, socket_dir=dpu_dir / "vhost"),
                                  driver, VmRuntime(driver), workdir / f"cmd{n}"))
            source, target = nodes
            made = Pair(source, target, request, f"nbd+unix:///{VOLUME}?socket={nbd}", SUBNETS[0].guest,
                        network.namespace, "tcp://127.0.0.1:49370")
            source.storage.attach(BOOT.id, VOLUME, made.volume_uri)
            source.runtime.define(request, [BOOT, NIC])
            launched = time.monotonic()
            source.runtime.power_on(request.uuid)
            made.uptime(source)
            timed("launch -> command channel answers", launched)
            made.wait_for_ping()
            timed("launch -> answers ping", launched)
            yield made
    finally:
        for running in reversed(started):
            if isinstance(running, LibvirtDaemon):
                running.stop()  # its QEMU with it
            else:
                running.kill()
        for node in locals().get("nodes", []):
            node.storage.close()
        shutil.rmtree(workdir, ignore_errors=True)
        timings.update({f"live migration: {name}": seconds for name, seconds in TIMINGS.items()})
        print("\nLIVE-MIGRATION " + ", ".join(f"{name}: {seconds:.3f} s" for name, seconds in TIMINGS.items()))


def _slow_migration(pair: Pair, **options: object) -> tuple[threading.Thread, list[BaseException | MigrationResult]]:
    """``migrate_live`` at :data:`SLOW_MIB` in a thread; what it returned or raised."""
    outcome: list[BaseException | MigrationResult] = []
    target = pair.target_xml()

    def migrate() -> None:
        try:
            outcome.append(pair.source.runtime.migrate_live(pair.uuid, target, bandwidth_mib=SLOW_MIB, **options))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
    thread = threading.Thread(target=migrate)
    thread.start()
    return thread, outcome


def _still_on_the_source(pair: Pair, uptime_before: float) -> None:
    assert pair.source.driver.state(pair.uuid) == DomainState.RUNNING
    assert pair.source.driver.domains() == [pair.uuid]
    assert pair.target.driver.state(pair.uuid) == DomainState.MISSING and pair.target.driver.domains() == []
    assert pair.uptime(pair.source) > uptime_before  # the same guest, it did not reboot


def test_an_aborted_live_migration_leaves_the_vm_running_on_the_source(pair: Pair):
    uptime = pair.uptime(pair.source)
    slots = pair.source.runtime.prepare_live_migration(pair.uuid, [NIC.id])
    assert slots == {BOOT.id: 0, NIC.id: 1}
    assert NIC.id not in pair.source.runtime.layout(pair.uuid) and not pair.answers_ping()
    pair.target.storage.attach(BOOT.id, VOLUME, pair.volume_uri)  # the second export of the volume
    thread, outcome = _slow_migration(pair)
    deadline = time.monotonic() + 20
    while (progress := pair.source.runtime.live_migration_progress(pair.uuid)) is None or not progress.data_processed:
        assert thread.is_alive() and time.monotonic() < deadline, f"no progress: {outcome}"
        time.sleep(0.1)
    assert progress.data_total >= 256 << 20 and progress.data_remaining > 0
    asked = time.monotonic()
    pair.source.runtime.abort_live_migration(pair.uuid)
    thread.join(30)
    timed("abort -> migrate_live returns", asked)
    (raised,) = outcome
    assert isinstance(raised, DriverError) and "cannot migrate domain" in raised.message, raised
    assert "cancel" in raised.message.lower(), raised.message  # libvirt's reason: "... canceled by client"
    assert pair.source.runtime.live_migration_progress(pair.uuid) is None
    with pytest.raises(DriverError, match="no live migration of domain .* is in progress"):
        pair.source.runtime.abort_live_migration(pair.uuid)
    _still_on_the_source(pair, uptime)
    pair.source.runtime.restore_after_live_migration(pair.uuid, [NIC], slots)
    assert pair.source.runtime.layout(pair.uuid) == slots
    pair.wait_for_ping()


def test_a_live_migration_past_its_timeout_is_aborted_and_the_vm_stays(pair: Pair):
    uptime = pair.uptime(pair.source)
    slots = pair.source.runtime.prepare_live_migration(pair.uuid, [NIC.id])
    asked = time.monotonic()
    thread, outcome = _slow_migration(pair, timeout=2.0)
    thread.join(60)
    timed("timeout 2 s -> migrate_live returns", asked)
    (raised,) = outcome
    assert isinstance(raised, DriverError) and "within 2 s (aborted)" in raised.message, raised
    _still_on_the_source(pair, uptime)
    pair.source.runtime.restore_after_live_migration(pair.uuid, [NIC], slots)
    pair.wait_for_ping()


def test_the_vm_moves_live_and_its_guest_runs_on(pair: Pair, capsys: pytest.CaptureFixture[str]):
    source, target = pair.source, pair.target
    pair.run(source, "mount -o remount,rw /boot && echo written-before > /boot/hlive.txt && sync "
                     "&& echo in-memory > /run/hlive-ram")
    uptime_before, clock_before = pair.uptime(source), time.monotonic()
    pinger = subprocess.Popen(["ip", "netns", "exec", pair.namespace, "ping", "-D", "-n", "-i", "0.05", "-W", "1",
                               pair.guest], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        step = time.monotonic()
        slots = source.runtime.prepare_live_migration(pair.uuid, [NIC.id])
        timed("prepare (NIC unplugged)", step)
        target.storage.attach(BOOT.id, VOLUME, pair.volume_uri)  # attached already: the same export
        migration = pair.target_xml()
        result = source.runtime.migrate_live(pair.uuid, migration)
        TIMINGS["migrate_live duration"] = result.duration_s
        TIMINGS["downtime (libvirt)"] = (result.downtime_ms or 0) / 1000
        step = time.monotonic()
        target.runtime.receive_live_migration(pair.uuid, [NIC], slots)
        timed("receive (NIC plugged on the target)", step)
        step = time.monotonic()
        pair.wait_for_ping()
        timed("NIC plugged -> guest answers ping", step)
        time.sleep(0.5)
    finally:
        pinger.terminate()
        replies = pinger.communicate(10)[0]
    stamps = [float(stamp) for stamp in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", replies, re.M)]
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    TIMINGS["network gap (ping)"] = max(gaps)

    # the domain: gone from the source, persistent on the target, the target driver's own
    assert source.driver.state(pair.uuid) == DomainState.MISSING and source.driver.domains() == []
    assert target.driver.state(pair.uuid) == DomainState.RUNNING and target.driver.domains() == [pair.uuid]
    assert target.domain(pair.uuid).isPersistent()
    target.driver.define(pair.uuid, migration.xml)  # the same XML: nothing to do
    assert target.runtime.layout(pair.uuid) == slots  # the NIC where it was
    assert target.driver.device_addresses(pair.uuid)[NIC.id] == (0, 2, 0, 0)
    socket_of_disk = target.domain(pair.uuid).XMLDesc(0)
    assert str(target.storage.socket_path(BOOT.id)) in socket_of_disk
    assert str(source.storage.socket_path(BOOT.id)) not in socket_of_disk

    # the guest: the same one, running on, its memory and disk there; its disk served by the target's DPU
    uptime_after = pair.uptime(target)
    assert uptime_after >= uptime_before + (time.monotonic() - clock_before) - 2.0
    assert pair.run(target, "cat /run/hlive-ram").strip() == "in-memory"
    source.storage.detach(BOOT.id, VOLUME)  # the source's export goes: the target's serves the disk
    assert pair.run(target, "echo 3 > /proc/sys/vm/drop_caches; cat /boot/hlive.txt").strip() == "written-before"
    pair.run(target, "echo written-after > /boot/hlive2.txt && sync && echo 3 > /proc/sys/vm/drop_caches")
    assert pair.run(target, "cat /boot/hlive2.txt").strip() == "written-after"

    with capsys.disabled():
        print(f"\nLIVE-MIGRATION duration {result.duration_s:.3f} s, downtime {result.downtime_ms} ms, "
              f"{result.data_total} bytes, network gap {TIMINGS['network gap (ping)']:.3f} s")
    assert result.downtime_ms is not None and 0 < result.downtime_ms < 1000
    assert result.duration_s < 30
    assert TIMINGS["network gap (ping)"] < 30
