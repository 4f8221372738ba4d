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
from dataclasses import asdict, dataclass, field
from typing import Any

from dpustack.agent.compute import Compute
from dpustack.agent.instance_runtime import InstanceFunction, InstanceRuntime, VmRuntime
from dpustack.agent.instance_steps import InstanceSteps, instance_function
from dpustack.agent.steps import Step, run_steps
from dpustack.agent.store import LEAVING, LEFT, PRESENT, AgentStore, FunctionRecord, InstanceRecord
from dpustack.contract.instances import BuildRequest, StepLog
from dpustack.contract.live_migration import IncomingRequest, LiveMigrateRequest, ReceiveRequest
from dpustack.drivers.hypervisor.migration import MigrationResult, MigrationTarget
from dpustack.errors import Conflict, DriverError, InvalidInput, NotFound
from dpustack.instance_states import InstanceStatus


@dataclass
class _Outgoing:
    """A migration away from this node in flight: a second call for it waits for its end."""

    uri: str
    done: threading.Event = field(default_factory=threading.Event)
    result: MigrationResult | None = None
    error: BaseException | None = None

    def wait(self, uuid: str, uri: str, timeout: float) -> MigrationResult:
        """Its answer, once it ends; Conflict if it goes elsewhere than ``uri``."""
        if uri != self.uri:
            raise Conflict(f"instance {uuid} is migrating to {self.uri} already, not to {uri}", field="uri")
        if not self.done.wait(timeout):
            raise DriverError(f"the live migration of instance {uuid} to {uri} did not end within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


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
        self._outgoing: dict[str, _Outgoing] = {}  # the migrations away in flight, by instance
        self._outgoing_lock = threading.Lock()

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
        times out: it then runs on here, the mark gone.

        Asked again (a controller that died while it waited resumes the step), it never moves the guest
        twice: a call for a migration in flight waits for it and answers what it answers; once the guest
        left for ``body.uri`` (gone from here, running there) the answer is success, with the measures kept
        on the record (none if this agent restarted meanwhile). A migration the hypervisor still runs when
        this agent restarted is waited for first."""
        runtime = self._vm()
        with self._outgoing_lock:
            move = self._outgoing.get(uuid)
            joined = move is not None
            if move is None:
                move = self._outgoing[uuid] = _Outgoing(body.uri)
        if joined:
            return move.wait(uuid, body.uri, body.timeout)
        try:
            move.result = self._migrate_once(runtime, uuid, body)
            return move.result
        except BaseException as exc:
            move.error = exc
            raise
        finally:
            move.done.set()
            with self._outgoing_lock:
                self._outgoing.pop(uuid, None)

    def _migrate_once(self, runtime: VmRuntime, uuid: str, body: LiveMigrateRequest) -> MigrationResult:
        self._record(uuid)
        runtime.wait_outgoing(uuid, body.timeout)
        if runtime.left_for(uuid, body.uri):
            left = (self._record(uuid).spec or {}).get(LEFT)
            return MigrationResult(**left) if left else MigrationResult(None, None, None)
        self._mark_leaving(uuid, body.uri)
        try:
            result = runtime.migrate_live(uuid, MigrationTarget(uri=body.uri, xml=body.xml), timeout=body.timeout)
        except BaseException:
            self._mark_leaving(uuid, None)
            raise
        with self._lock:
            spec = dict(self._record(uuid).spec or {})
            spec[LEFT] = asdict(result)
            self._store.update(InstanceRecord, uuid, spec=spec)
        return result

    def abort(self, uuid: str) -> None:
        """Abort the instance's outgoing live migration: it runs on here. DriverError if none is in progress."""
        self._record(uuid)
        self._vm().abort_live_migration(uuid)

    # -- helpers -----------------------------------------------------------
    def _mark_leaving(self, uuid: str, target: str | None) -> None:
        with self._lock:
            spec = dict(self._record(uuid).spec or {})
            spec.pop(LEFT, None)
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
