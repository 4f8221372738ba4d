"""VmRuntime's pieces of a live migration, on two pretend hosts: the source unplugs the NICs, the target's XML
has its own storage and no NIC, the domain moves, the target plugs the NICs into their old slots; an aborted
move leaves the VM on the source, where its NICs are plugged back."""

from __future__ import annotations

import threading
import time
import uuid as uuid_module
from typing import Any

import pytest

from dpustack.agent.instance_runtime import VmRuntime
from dpustack.agent.instance_runtime.base import InstanceFunction
from dpustack.contract.instances import BuildRequest
from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.hypervisor.domain_xml import LabBacking
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver
from dpustack.drivers.hypervisor.migration import MigrationTarget
from dpustack.errors import Conflict, DriverError, InvalidInput

BOOT = InstanceFunction("vol-boot", "storage", "0000:41:00.0", bootable=True)
DATA = InstanceFunction("vol-data", "storage", "0000:42:00.0")
NIC_A = InstanceFunction("port-a", "net", "0000:43:00.0", mac="aa:bb:cc:00:00:0a")
NIC_B = InstanceFunction("port-b", "net", "0000:44:00.0", mac="aa:bb:cc:00:00:0b")


class LabHost(MemoryHypervisorDriver):
    """A pretend lab host: its guests' disks are its DPU's vhost-user-blk sockets, their NICs its taps."""

    def __init__(self, **options: Any):
        super().__init__(form="lab", **options)

    def lab_backing(self) -> LabBacking:
        return LabBacking(tap=lambda function: f"{self.uri[-1]}-tap-{function.id}",
                          socket=lambda function: f"/run/{self.uri[-1]}/{function.id}.sock")


def request(**overrides: object) -> BuildRequest:
    fields = {"uuid": str(uuid_module.uuid4()), "name": "v1", "flavor": {"name": "vm.small", "vcpus": 2, "ram": 512},
              "networks": [{"port_id": NIC_A.id, "mac": NIC_A.mac}, {"port_id": NIC_B.id, "mac": NIC_B.mac}]}
    return BuildRequest.model_validate({**fields, **overrides})


@pytest.fixture
def nodes() -> tuple[VmRuntime, VmRuntime, LabHost, LabHost, BuildRequest]:
    source_host, target_host = LabHost(host="hlive-1"), LabHost(host="hlive-2")
    source, target = VmRuntime(source_host), VmRuntime(target_host)
    wanted = request()
    source.define(wanted, [BOOT, DATA, NIC_A, NIC_B])
    source.power_on(wanted.uuid)
    return source, target, source_host, target_host, wanted


def test_the_vm_moves_its_nics_unplugged_before_and_plugged_into_their_slots_on_the_target(nodes):
    source, target, source_host, target_host, wanted = nodes
    boots = source_host.held[wanted.uuid].boots

    slots = source.prepare_live_migration(wanted.uuid, [NIC_A.id, NIC_B.id])

    assert slots == {BOOT.id: 0, DATA.id: 1, NIC_A.id: 2, NIC_B.id: 3}
    assert sorted(source_host.held[wanted.uuid].live) == [BOOT.id, DATA.id]  # the guest let go of its NICs
    xml = target.incoming_xml(wanted, [BOOT, DATA], slots)
    assert "/run/2/vol-boot.sock" in xml and "/run/1/" not in xml and "tap" not in xml

    result = source.migrate_live(wanted.uuid, MigrationTarget(uri=target_host.uri, xml=xml))
    target.receive_live_migration(wanted.uuid, [NIC_A, NIC_B], slots)

    assert result.downtime_ms == 0
    assert source_host.state(wanted.uuid) == DomainState.MISSING
    assert target.power_state(wanted.uuid) == "on" and target_host.domains() == [wanted.uuid]
    assert target.layout(wanted.uuid) == slots  # every device where it was
    moved = target_host.held[wanted.uuid]
    assert moved.boots == boots and sorted(moved.live) == sorted(slots)
    assert moved.live[NIC_A.id].find("target").get("dev") == "2-tap-port-a"  # the target's tap
    target.receive_live_migration(wanted.uuid, [NIC_A, NIC_B], slots)  # again: nothing to do
    assert target.layout(wanted.uuid) == slots
    target.define(wanted, [BOOT, DATA])  # the incoming XML is the target driver's own: nothing to do


def test_an_aborted_move_leaves_the_vm_on_the_source_where_its_nics_are_plugged_back(nodes):
    source, target, source_host, target_host, wanted = nodes
    slots = source.prepare_live_migration(wanted.uuid, [NIC_A.id, NIC_B.id])
    destination = MigrationTarget(uri=target_host.uri, xml=target.incoming_xml(wanted, [BOOT, DATA], slots))
    source_host.migration_seconds = 30
    failed: list[DriverError] = []

    def migrate() -> None:
        try:
            source.migrate_live(wanted.uuid, destination)
        except DriverError as exc:
            failed.append(exc)
    thread = threading.Thread(target=migrate)
    thread.start()
    deadline = time.monotonic() + 5
    while source.live_migration_progress(wanted.uuid) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    source.abort_live_migration(wanted.uuid)
    thread.join(5)

    assert failed and "canceled by client" in failed[0].message
    assert source.power_state(wanted.uuid) == "on" and target_host.domains() == []
    with pytest.raises(DriverError, match="does not run on this host"):
        target.receive_live_migration(wanted.uuid, [NIC_A, NIC_B], slots)  # it did not arrive
    source.restore_after_live_migration(wanted.uuid, [NIC_A, NIC_B], slots)
    assert source.layout(wanted.uuid) == slots
    assert sorted(source_host.held[wanted.uuid].live) == sorted(slots)


def test_a_nic_left_plugged_fails_the_move_and_the_vm_runs_on(nodes):
    source, target, source_host, target_host, wanted = nodes
    slots = source.prepare_live_migration(wanted.uuid, [NIC_A.id])  # port-b forgotten
    xml = target.incoming_xml(wanted, [BOOT, DATA], slots)
    with pytest.raises(DriverError, match=r"do not match the running guest's \(port-b\)"):
        source.migrate_live(wanted.uuid, MigrationTarget(uri=target_host.uri, xml=xml))
    assert source.power_state(wanted.uuid) == "on" and target_host.domains() == []


def test_what_cannot_move_is_refused_before_anything_changes(nodes):
    source, target, source_host, target_host, wanted = nodes
    slots = source.layout(wanted.uuid)
    with pytest.raises(InvalidInput, match="functions: port-a are net functions"):
        target.incoming_xml(wanted, [BOOT, NIC_A], slots)
    with pytest.raises(InvalidInput, match="slots: no slot for vol-data"):
        target.incoming_xml(wanted, [BOOT, DATA], {BOOT.id: 0})
    with_gpu = request(pci_devices=[{"address": "0000:81:00.0", "request_id": "gpu"}])
    with pytest.raises(Conflict, match="has PCI devices passed through"):
        target.incoming_xml(with_gpu, [BOOT], slots)

    gpu_host = LabHost(host="hlive-3")
    runtime = VmRuntime(gpu_host)
    runtime.define(with_gpu, [BOOT, NIC_A])
    runtime.power_on(with_gpu.uuid)
    with pytest.raises(Conflict, match=r"has PCI devices passed through \(pci0\)"):
        runtime.prepare_live_migration(with_gpu.uuid, [NIC_A.id])
    assert NIC_A.id in gpu_host.held[with_gpu.uuid].live  # nothing was unplugged

    source.power_off(wanted.uuid)
    with pytest.raises(DriverError, match=r"does not run on this host \(its domain is off\)"):
        source.prepare_live_migration(wanted.uuid, [NIC_A.id])


def test_in_production_form_the_storage_functions_are_hostdevs_and_cannot_move():
    source_host, target_host = MemoryHypervisorDriver(host="hlive-p1"), MemoryHypervisorDriver(host="hlive-p2")
    source, target = VmRuntime(source_host), VmRuntime(target_host)
    wanted = request()
    source.define(wanted, [BOOT, NIC_A, NIC_B])
    source.power_on(wanted.uuid)
    slots = source.prepare_live_migration(wanted.uuid, [NIC_A.id, NIC_B.id])
    xml = target.incoming_xml(wanted, [BOOT], slots)
    with pytest.raises(DriverError, match=r"domain has assigned non-USB host devices \(vol-boot\)"):
        source.migrate_live(wanted.uuid, MigrationTarget(uri=target_host.uri, xml=xml))
    assert source.power_state(wanted.uuid) == "on"
