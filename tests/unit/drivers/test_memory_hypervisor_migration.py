"""The memory hypervisor's live migration between two pretend hosts, with the refusals of the libvirt one."""

from __future__ import annotations

import threading
import time

import pytest

from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.hypervisor.domain_xml import DomainSpec, LabBacking, PassedFunction, assemble
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver
from dpustack.drivers.hypervisor.migration import MigrationResult, MigrationTarget
from dpustack.errors import DriverError, InvalidInput

UUID = "6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5"
BOOT = PassedFunction("boot", "0000:41:00.0", "storage", slot=0, boot_order=1)
NIC = PassedFunction("nic0", "0000:42:00.0", "net", slot=1, mac="52:54:00:00:00:01")


def xml(host: str, functions: list[PassedFunction], form: str = "lab", name: str = "vm-1") -> str:
    """The domain as ``host`` runs it: its own storage socket and tap."""
    lab = LabBacking(tap=lambda function: f"tap-{host}", socket=lambda function: f"/run/{host}/{function.id}.sock")
    return assemble(DomainSpec(name=name, uuid=UUID, vcpus=1, memory_mib=256, functions=functions), form, lab)


@pytest.fixture
def hosts() -> tuple[MemoryHypervisorDriver, MemoryHypervisorDriver]:
    source, target = MemoryHypervisorDriver(host="hlive-a"), MemoryHypervisorDriver(host="hlive-b")
    source.define(UUID, xml("a", [BOOT, NIC]))
    source.start(UUID)
    return source, target


def to(target: MemoryHypervisorDriver, functions: list[PassedFunction] = [BOOT], **options: str) -> MigrationTarget:
    return MigrationTarget(uri=target.uri, xml=xml("b", functions, **options))


def test_a_running_domain_moves_to_the_target_as_its_xml_there_with_the_same_guest(hosts):
    source, target = hosts
    source.detach(UUID, NIC.id)
    boots = source.held[UUID].boots

    result = source.migrate_live(UUID, to(target))

    assert isinstance(result, MigrationResult) and result.downtime_ms == 0 and result.data_total == 256 << 20
    assert source.state(UUID) == DomainState.MISSING and source.domains() == []
    assert target.state(UUID) == DomainState.RUNNING and target.domains() == [UUID]
    moved = target.held[UUID]
    assert moved.boots == boots and sorted(moved.live) == sorted(moved.config) == ["boot"]  # the same guest, no reboot
    assert "/run/b/boot.sock" in moved.xml
    target.define(UUID, xml("b", [BOOT]))  # the target's driver marked it: the same XML is nothing to do
    with pytest.raises(DriverError, match="defined already"):
        target.define(UUID, xml("a", [BOOT]))


def test_a_guest_with_devices_the_target_xml_lacks_is_refused_and_runs_on(hosts):
    source, target = hosts
    with pytest.raises(DriverError, match=r"the target's devices do not match the running guest's \(nic0\)"):
        source.migrate_live(UUID, to(target))  # the NIC was not unplugged first
    assert source.state(UUID) == DomainState.RUNNING and target.domains() == []


def test_passed_through_devices_cannot_move(hosts):
    source, target = hosts
    source.undefine(UUID)
    source.define(UUID, xml("a", [BOOT], form="production"))
    source.start(UUID)
    with pytest.raises(DriverError, match=r"domain has assigned non-USB host devices \(boot\)"):
        source.migrate_live(UUID, to(target, form="production"))
    assert source.state(UUID) == DomainState.RUNNING


def test_what_libvirt_refuses_is_refused(hosts):
    source, target = hosts
    source.detach(UUID, NIC.id)
    with pytest.raises(DriverError, match="cannot connect to the hypervisor there"):
        source.migrate_live(UUID, MigrationTarget(uri="memory:///nowhere", xml=xml("b", [BOOT])))
    with pytest.raises(DriverError, match="to the same host"):
        source.migrate_live(UUID, MigrationTarget(uri=source.uri, xml=xml("b", [BOOT])))
    with pytest.raises(InvalidInput, match="xml: the target's domain is 'vm-2'"):
        source.migrate_live(UUID, to(target, name="vm-2"))
    with pytest.raises(InvalidInput, match="timeout"):
        source.migrate_live(UUID, to(target), timeout=0)
    with pytest.raises(InvalidInput, match="bandwidth_mib"):
        source.migrate_live(UUID, to(target), bandwidth_mib=0)
    target.define(UUID, xml("b", [BOOT]))
    with pytest.raises(DriverError, match="the target has a domain .* already"):
        source.migrate_live(UUID, to(target))
    target.undefine(UUID)
    source.stop(UUID)
    with pytest.raises(DriverError, match="is off: only a running domain migrates live"):
        source.migrate_live(UUID, to(target))
    assert target.domains() == []


def _in_thread(source: MemoryHypervisorDriver, target: MigrationTarget, **options: float) -> tuple[threading.Thread, list]:
    outcome: list = []

    def migrate() -> None:
        try:
            outcome.append(source.migrate_live(UUID, target, **options))
        except DriverError as exc:
            outcome.append(exc)
    thread = threading.Thread(target=migrate)
    thread.start()
    return thread, outcome


def test_progress_and_abort_from_another_thread_leave_the_domain_on_the_source(hosts):
    source, target = hosts
    source.detach(UUID, NIC.id)
    source.migration_seconds = 30
    assert source.migration_progress(UUID) is None
    thread, outcome = _in_thread(source, to(target))
    deadline = time.monotonic() + 5
    while (progress := source.migration_progress(UUID)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert progress.data_total == 256 << 20 and progress.data_remaining == progress.data_total - progress.data_processed

    source.abort_migration(UUID)
    thread.join(5)

    (raised,) = outcome
    assert isinstance(raised, DriverError) and "canceled by client" in raised.message
    assert source.state(UUID) == DomainState.RUNNING and target.domains() == []
    assert source.migration_progress(UUID) is None
    with pytest.raises(DriverError, match="no live migration of domain .* is in progress"):
        source.abort_migration(UUID)


def test_a_migration_past_its_timeout_is_aborted(hosts):
    source, target = hosts
    source.detach(UUID, NIC.id)
    source.migration_seconds = 30
    started = time.monotonic()
    with pytest.raises(DriverError, match=r"within 0.2 s \(aborted\)"):
        source.migrate_live(UUID, to(target), timeout=0.2)
    assert time.monotonic() - started < 5
    assert source.state(UUID) == DomainState.RUNNING and target.domains() == []


def test_an_injected_fault_fails_the_migration_before_anything_moves(hosts):
    source, target = hosts
    source.detach(UUID, NIC.id)
    source.faults.arm("migrate_live")
    with pytest.raises(DriverError, match="injected fault"):
        source.migrate_live(UUID, to(target))
    assert source.state(UUID) == DomainState.RUNNING and target.domains() == []
