"""A VM's live migration as this node's agent takes part in it, source or target (docs/migration.md).

The controller calls, in order: the target's :meth:`LiveMoves.incoming` (its DPU makes the instance's
storage and net functions, the representors plugged with the port ids; the answer is the domain XML the
source migrates to and where this host's hypervisor is reached, its ``migration_uri``), the source's
:meth:`~LiveMoves.prepare` (its NICs unplugged from the guest), the source's :meth:`~LiveMoves.migrate`
(the switch-over), the target's :meth:`~LiveMoves.receive` (its NICs plugged in, the instance recorded) and
the source's delete (its functions go, the instance is forgotten; the domain left with the migration).
Before the switch-over the source's :meth:`~LiveMoves.restore` plugs its NICs back and the target's delete
takes what :meth:`~LiveMoves.incoming` made. :meth:`~LiveMoves.migrate` and :meth:`~LiveMoves.abort` do
not hold the node's lock: the migration takes its time, and the abort must reach it meanwhile.
"""

from __future__ import annotations

import threading
from typing import Any

from dpustack.agent.compute import Compute
from dpustack.agent.instance_runtime import InstanceFunction, InstanceRuntime, VmRuntime
from dpustack.agent.instance_steps import InstanceSteps, instance_function
from dpustack.agent.steps import Step, run_steps
from dpustack.agent.store import LEAVING, PRESENT, AgentStore, FunctionRecord, InstanceRecord
from dpustack.contract.instances import BuildRequest, StepLog
from dpustack.contract.live_migration import IncomingRequest, LiveMigrateRequest, ReceiveRequest
from dpustack.drivers.hypervisor.migration import MigrationResult, MigrationTarget
from dpustack.errors import Conflict, InvalidInput, NotFound
from dpustack.instance_states import InstanceStatus


class LiveMoves:
    """This node's side of its VMs' live migrations; every call but :meth:`migrate` and :meth:`abort` is
    serialized by ``lock`` with the node's other changes."""

    def __init__(self, store: AgentStore, runtime: InstanceRuntime, steps: InstanceSteps, compute: Compute, *,
                 lock: threading.RLock):
        self._store = store
        self._runtime = runtime
        self._steps = steps
        self._compute = compute
        self._lock = lock

    # -- target ------------------------------------------------------------
    def incoming(self, uuid: str, body: IncomingRequest) -> tuple[str, str, dict[str, Any], list[StepLog]]:
        """Make the instance's functions here (a volume's on ``body.request``'s URI, a NIC's representor plugged
        with its port id), all undone on a failure; return the domain XML it arrives as (its storage in the
        source's ``slots``), this hypervisor's migration URI, the instance as it will be, and the steps.
        Conflict if it is recorded here already (it arrived) or has PCI devices; InvalidInput for another
        UUID in the request."""
        request = self._request(uuid, body.request)
        runtime = self._vm()
        with self._lock:
            if self._store.get(InstanceRecord, uuid) is not None:
                raise Conflict(f"instance {uuid} runs on this node already", field="uuid")
            if request.pci_devices or any(nic.vf is not None for nic in request.networks):
                raise Conflict(f"instance {uuid} has PCI devices passed through: they cannot move with its memory",
                               field="pci_devices")
            self._compute.check_build(request)
            steps: list[Step] = []
            for volume in request.volumes:
                steps += self._steps.add_volume(uuid, volume.volume_id, volume.uri, volume.bootable)
            for nic in request.networks:
                steps += self._steps.add_nic(uuid, nic.port_id, nic.mac, nic.network_id, nic.qos_pps)
            logs = run_steps(f"arrival of instance {uuid}", steps)
            storage = [f for f in self._functions(uuid) if f.kind == "storage"]
            xml = runtime.incoming_xml(request, storage, body.slots)
            pending = InstanceRecord(uuid=uuid, name=request.name, status=InstanceStatus.ACTIVE, power="on",
                                     vcpus=request.flavor.vcpus, ram=request.flavor.ram, spec={})
            return xml, runtime.migration_uri, self._compute.view(pending), logs

    def receive(self, uuid: str, body: ReceiveRequest) -> tuple[dict[str, Any], list[StepLog]]:
        """The instance arrived (its domain came with the migration): plug its NICs, each into its slot of
        ``body.slots``, open its console and record it as ``body.request``. Recorded already: it is
        returned. DriverError if its domain is not here."""
        request = self._request(uuid, body.request)
        runtime = self._vm()
        with self._lock:
            if (record := self._store.get(InstanceRecord, uuid)) is not None:
                return self._compute.view(record), []
            nets = [f for f in self._functions(uuid) if f.kind == "net"]
            steps = [Step(f"plug {len(nets)} NIC(s) into {runtime.machine}",
                          lambda: runtime.receive_live_migration(uuid, nets, body.slots)),
                     Step("open serial console", lambda: self._compute.consoles.open(uuid),
                          lambda: self._compute.consoles.close(uuid)),
                     self._compute.record_step(request)]
            logs = run_steps(f"receive of instance {uuid}", steps)
            self._compute.sync_metadata()
            return self._compute.instance(uuid), logs

    # -- source ------------------------------------------------------------
    def prepare(self, uuid: str) -> tuple[dict[str, Any], list[StepLog]]:
        """Unplug the running instance's NICs from its guest (its disks stay); the answer has every device's
        guest slot. Conflict for PCI devices, before anything changes."""
        runtime = self._vm()
        with self._lock:
            self._record(uuid)
            nets = [f.id for f in self._functions(uuid) if f.kind == "net"]
            logs = run_steps(f"prepare of instance {uuid} for a live migration",
                             [Step(f"unplug {len(nets)} NIC(s) from {runtime.machine}",
                                   lambda: runtime.prepare_live_migration(uuid, nets))])
            return self._compute.instance(uuid), logs

    def restore(self, uuid: str) -> tuple[dict[str, Any], list[StepLog]]:
        """After a migration that did not happen (failed, aborted): plug the NICs back into the guest, each
        where it was; plugged already: nothing to do. DriverError if the domain is not here."""
        runtime = self._vm()
        with self._lock:
            record = self._record(uuid)
            nets = [f for f in self._functions(uuid) if f.kind == "net"]
            slots = dict((record.spec or {}).get("slots", {}))
            logs = run_steps(f"restore of instance {uuid} after a live migration",
                             [Step(f"plug {len(nets)} NIC(s) back into {runtime.machine}",
                                   lambda: runtime.restore_after_live_migration(uuid, nets, slots))])
            return self._compute.instance(uuid), logs

    def migrate(self, uuid: str, body: LiveMigrateRequest) -> MigrationResult:
        """Move the running instance live to the hypervisor at ``body.uri`` as ``body.xml``; returns once it
        runs there. Its record is marked leaving meanwhile (the reconciler does not define its domain here
        again), and stays so once it left, until it is deleted here. DriverError when it fails, is aborted or
        times out: it then runs on here, the mark gone."""
        runtime = self._vm()
        self._mark_leaving(uuid, body.uri)
        try:
            return runtime.migrate_live(uuid, MigrationTarget(uri=body.uri, xml=body.xml), timeout=body.timeout)
        except BaseException:
            self._mark_leaving(uuid, None)
            raise

    def abort(self, uuid: str) -> None:
        """Abort the instance's outgoing live migration: it runs on here. DriverError if none is in progress."""
        self._record(uuid)
        self._vm().abort_live_migration(uuid)

    # -- helpers -----------------------------------------------------------
    def _mark_leaving(self, uuid: str, target: str | None) -> None:
        with self._lock:
            spec = dict(self._record(uuid).spec or {})
            if target is None:
                spec.pop(LEAVING, None)
            else:
                spec[LEAVING] = target
            self._store.update(InstanceRecord, uuid, spec=spec)

    def _vm(self) -> VmRuntime:
        if not isinstance(self._runtime, VmRuntime):
            raise Conflict(f"this node's instances are {self._runtime.machine}s: they do not migrate live",
                           field="uuid")
        return self._runtime

    def _record(self, uuid: str) -> InstanceRecord:
        record = self._store.get(InstanceRecord, uuid)
        if record is None:
            raise NotFound(f"instance '{uuid}' not found on this node", field="uuid")
        return record

    def _functions(self, uuid: str) -> list[InstanceFunction]:
        return [instance_function(self._store, record)
                for record in self._store.find(FunctionRecord, instance_uuid=uuid, desired=PRESENT)]

    @staticmethod
    def _request(uuid: str, request: BuildRequest) -> BuildRequest:
        if request.uuid != uuid:
            raise InvalidInput(f"request.uuid: {request.uuid} is not the instance {uuid}", field="request.uuid")
        return request
