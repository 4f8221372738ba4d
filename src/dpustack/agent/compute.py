"""The compute role: an instance's lifecycle on its node, as steps with undo.

Building an instance plugs one storage function per volume and one net
function per NIC into the host (:mod:`dpustack.agent.instance_steps`), then
powers the instance on, its serial console held and logged from before
that (:mod:`dpustack.agent.consoles`). Power, console and whether one more instance fits
are the node's :class:`~dpustack.agent.instance_runtime.InstanceRuntime`'s:
on bare metal the instance is the host and its BMC drives it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dpustack.agent.consoles import Consoles
from dpustack.agent.instance_runtime import InstanceRuntime
from dpustack.agent.instance_steps import (InstanceSteps, RepresentorLookup, instance_function, instance_functions,
                                          metadata_networks, net_function_id, storage_function_id)
from dpustack.agent.metadata_proxy import MetadataProxies
from dpustack.agent.steps import Step, run_steps
from dpustack.agent.store import (LEAVING, LEFT, PRESENT, AgentStore, FunctionRecord, InstanceRecord, PortBinding,
                                  VolumeBinding)
from dpustack.agent.wiring import Wiring
from dpustack.contract.instances import BuildRequest, FlavorSpec, NicVf, StepLog
from dpustack.contract.numa import NumaPlacement
from dpustack.drivers.bmc import Console, RebootKind
from dpustack.errors import Conflict, DpustackError, InvalidInput, NotFound
from dpustack.instance_states import STATUS_BY_POWER, InstanceStatus, PowerState, observed_status

log = logging.getLogger(__name__)


class Compute:
    """Instance lifecycle on a node whose instances ``runtime`` runs; every action is serialized by ``lock``."""

    def __init__(self, store: AgentStore, runtime: InstanceRuntime, wiring: Wiring, *, bridge: str,
                 lock: threading.RLock, consoles: Consoles, metadata: MetadataProxies | None = None,
                 representor: RepresentorLookup | None = None):
        self._store = store
        self.consoles = consoles
        self._runtime = runtime
        self._steps = InstanceSteps(store, wiring, bridge=bridge, metadata=metadata, representor=representor)
        self._lock = lock
        self._metadata = metadata

    # -- queries -----------------------------------------------------------
    def instances(self) -> list[dict[str, Any]]:
        return [self.view(record) for record in self._store.find(InstanceRecord)]

    def instance(self, uuid: str) -> dict[str, Any]:
        return self.view(self._record(uuid))

    def console(self, uuid: str) -> Console:
        self._record(uuid)
        return self._runtime.console(uuid)

    def view(self, record: InstanceRecord) -> dict[str, Any]:
        """AgentInstance: the record with its NICs and volumes as recorded."""
        functions = {f.id: f for f in self._store.find(FunctionRecord, instance_uuid=record.uuid)}
        vfs = {nic["port_id"]: nic["vf"]["address"] for nic in (record.spec or {}).get("networks", [])
               if nic.get("vf")}
        nics = []
        for binding in self._store.find(PortBinding, instance_uuid=record.uuid, desired=PRESENT):
            function = functions.get(binding.function_id or "")
            if binding.port_id in vfs:  # a VF passed through: its representor is the switch port
                bdf, representor = vfs[binding.port_id], binding.port_name
            else:
                bdf, representor = (function.bdf, function.representor) if function else (None, None)
            nics.append({"port_id": binding.port_id, "mac": binding.mac, "function_id": binding.function_id,
                         "bdf": bdf, "representor": representor})
        volumes = []
        for volume in self._store.find(VolumeBinding, instance_uuid=record.uuid, desired=PRESENT):
            function = functions.get(volume.function_id)
            volumes.append({"volume_id": volume.volume_id, "uri": volume.uri, "bootable": volume.bootable,
                            "function_id": volume.function_id, "bdf": function.bdf if function else None})
        return {"uuid": record.uuid, "name": record.name, "status": record.status, "power_state": record.power,
                "vcpus": record.vcpus, "ram": record.ram, "fault": record.fault, "nics": nics, "volumes": volumes,
                "pci_devices": (record.spec or {}).get("pci_devices", []),
                "slots": (record.spec or {}).get("slots", {})}

    # -- build and delete --------------------------------------------------
    def build(self, request: BuildRequest) -> tuple[dict[str, Any], list[StepLog]]:
        """Plug the instance's volumes and NICs, power it on (or leave it off: the request's ``power``) and
        record it; building an existing instance returns it."""
        with self._lock:
            existing = self._store.get(InstanceRecord, request.uuid)
            if existing is not None:
                return self.view(existing), []
            self.check_build(request)
            steps: list[Step] = []
            for volume in request.volumes:
                steps += self._steps.add_volume(request.uuid, volume.volume_id, volume.uri, volume.bootable,
                                                request.bdfs.get(volume.volume_id))
            for nic in request.networks:
                if nic.vf is not None:
                    steps += self._steps.add_vf_nic(request.uuid, nic.port_id, nic.mac, nic.vf, nic.network_id,
                                                    nic.qos_pps)
                else:
                    steps += self._steps.add_nic(request.uuid, nic.port_id, nic.mac, nic.network_id, nic.qos_pps,
                                                 request.bdfs.get(nic.port_id))
            if self._runtime.passes_functions:
                steps.append(Step(f"define {self._runtime.machine}",
                                  lambda: self._runtime.define(request, instance_functions(self._store, request.uuid)),
                                  lambda: self._runtime.undefine(request.uuid)))
            steps.append(Step("open serial console", lambda: self.consoles.open(request.uuid),
                              lambda: self.consoles.close(request.uuid)))
            steps.append(self._power_step(request.uuid, request.power))
            steps.append(self.record_step(request))
            logs = run_steps(f"build of instance {request.uuid}", steps)
            log.info("built instance %s with %d NIC(s) and %d volume(s)", request.uuid,
                     len(request.networks), len(request.volumes))
            return self.instance(request.uuid), logs

    def delete(self, uuid: str) -> list[StepLog]:
        """Power off, unplug and delete every function, forget the instance; stops at a failure."""
        with self._lock:
            record = self._store.get(InstanceRecord, uuid)
            functions = self._store.find(FunctionRecord, instance_uuid=uuid)
            ports = {b.function_id: b for b in self._store.find(PortBinding, instance_uuid=uuid)}
            volumes = {b.function_id: b for b in self._store.find(VolumeBinding, instance_uuid=uuid)}
            if record is None and not (functions or ports or volumes):
                return []
            steps = [self._power_step(uuid, "off", undoable=False)]
            if self._runtime.passes_functions:
                steps.append(Step(f"undefine {self._runtime.machine}", lambda: self._runtime.undefine(uuid)))
            for function in sorted(functions, key=lambda f: f.kind != "net"):  # NICs first, then storage
                if (port := ports.pop(function.id, None)) is not None:
                    steps.append(self._steps.unplug(port))
                steps.append(self._steps.delete_function(function))
                if (volume := volumes.pop(function.id, None)) is not None:  # the host has let go of the disk
                    steps.append(self._steps.detach(volume))
            steps += [self._steps.unplug(port) for port in ports.values()]
            steps += [self._steps.detach(volume) for volume in volumes.values()]
            steps.append(Step("forget instance", lambda: self._store.remove(InstanceRecord, uuid)))
            steps.append(Step("close serial console", lambda: self.consoles.close(uuid)))
            logs = run_steps(f"delete of instance {uuid}", steps, rollback=False)
            log.info("deleted instance %s", uuid)
            self.sync_metadata()
            return logs

    # -- power -------------------------------------------------------------
    def set_power(self, uuid: str, target: PowerState) -> tuple[dict[str, Any], list[StepLog]]:
        """Stop (``off``) or start (``on``) the instance; its functions stay plugged."""
        with self._lock:
            self._record(uuid)
            logs = run_steps(f"power {target} of instance {uuid}", [self._power_step(uuid, target)])
            return self.instance(uuid), logs

    def follow_power(self) -> None:
        """Read each instance's power back onto its record (after the host was switched from outside), a
        paused one PAUSED; an instance in ERROR stays in ERROR."""
        with self._lock:
            for record in self._store.find(InstanceRecord):
                if record.status != InstanceStatus.ERROR:
                    power = self._runtime.power_state(record.uuid)
                    status = observed_status(power, None, paused=self._runtime.paused(record.uuid))
                    self._store.update(InstanceRecord, record.uuid, power=power, status=status)

    def set_paused(self, uuid: str, paused: bool) -> tuple[dict[str, Any], list[StepLog]]:
        """Pause (stop the CPUs of) or unpause a running instance, a VM; paused or running already: nothing
        changes. Conflict for an instance that is off, and where instances cannot be paused (bare metal)."""
        with self._lock:
            record = self._record(uuid)
            if record.power == "off":
                raise Conflict(f"instance '{uuid}' is {InstanceStatus.SHUTOFF}: start it first", field="uuid")
            runtime, verb = self._runtime, "pause" if paused else "unpause"
            seen: dict[str, bool] = {}

            def do() -> None:
                seen["paused"] = runtime.paused(uuid)
                (runtime.pause if paused else runtime.unpause)(uuid)
                if record.status != InstanceStatus.ERROR:
                    self._store.update(InstanceRecord, uuid, status=observed_status("on", None, paused=paused))

            def undo() -> None:
                self._store.update(InstanceRecord, uuid, status=record.status)
                if seen.get("paused", paused) != paused:
                    (runtime.unpause if paused else runtime.pause)(uuid)

            logs = run_steps(f"{verb} of instance {uuid}", [Step(f"{verb} {runtime.machine}", do, undo)])
            return self.instance(uuid), logs

    def reboot(self, uuid: str, kind: RebootKind) -> tuple[dict[str, Any], list[StepLog]]:
        """Hard reboot (also starts a stopped instance) or soft reboot (needs a running one)."""
        with self._lock:
            record = self._record(uuid)
            if kind == "soft" and record.power == "off":
                raise Conflict(f"instance '{uuid}' is {InstanceStatus.SHUTOFF}: start it, or reboot it hard",
                               field="type")
            if kind == "soft" and self._runtime.paused(uuid):
                raise Conflict(f"instance '{uuid}' is {InstanceStatus.PAUSED} and cannot hear a soft reboot: "
                               "unpause it, or reboot it hard", field="type")

            def reboot() -> None:
                self._store.update(InstanceRecord, uuid, power="on", status=STATUS_BY_POWER["on"])
                self._runtime.reboot(uuid, kind)

            def restore() -> None:
                self._store.update(InstanceRecord, uuid, power=record.power, status=record.status)

            logs = run_steps(f"{kind} reboot of instance {uuid}",
                             [Step(f"{kind} reboot {self._runtime.machine}", reboot, restore)])
            return self.instance(uuid), logs

    def resize(self, uuid: str, flavor: FlavorSpec,
               placement: NumaPlacement | None) -> tuple[dict[str, Any], list[StepLog]]:
        """Give a VM another flavor (or its old one back, a revert): stop it if it runs (the power button, then
        the plug, as a stop), define its domain again with the flavor's vCPUs and memory and ``placement``, its
        functions and devices where they were, record it, and start it again if it ran. A failure undoes it
        all: the old definition, running if it was. The flavor and placement it has already: nothing to do.
        Conflict for a paused VM and where instances cannot be resized (bare metal)."""
        with self._lock:
            record = self._record(uuid)
            runtime, spec = self._runtime, dict(record.spec or {})
            if not runtime.resizable:
                raise Conflict(f"instance '{uuid}' runs on the {runtime.machine}, whose size is its own: it cannot "
                               "be resized", field="uuid")
            wanted = {"flavor": flavor.model_dump(mode="json"),
                      "numa_placement": placement.model_dump(mode="json") if placement else None}
            if all(spec.get(key) == value for key, value in wanted.items()):
                return self.instance(uuid), []
            if runtime.paused(uuid):
                raise Conflict(f"instance '{uuid}' is {InstanceStatus.PAUSED}: unpause it to resize it", field="uuid")
            functions = instance_functions(self._store, uuid)
            old_request, new_request = _request_of(record, spec), _request_of(record, {**spec, **wanted})
            resized = {"spec": {**spec, **wanted}, "vcpus": flavor.vcpus, "ram": flavor.ram}
            before = {"spec": spec, "vcpus": record.vcpus, "ram": record.ram}
            steps = [self._power_step(uuid, "off")] if record.power == "on" else []
            steps += [Step(f"define {runtime.machine} with flavor {flavor.name}",
                           lambda: runtime.redefine(new_request, functions),
                           lambda: runtime.redefine(old_request, functions)),
                      Step("record flavor", lambda: self._store.update(InstanceRecord, uuid, **resized),
                           lambda: self._store.update(InstanceRecord, uuid, **before))]
            if record.power == "on":
                steps.append(self._power_step(uuid, "on"))
            logs = run_steps(f"resize of instance {uuid} to flavor {flavor.name}", steps)
            log.info("instance %s resized to flavor %s (%d vCPU, %d MiB)", uuid, flavor.name, flavor.vcpus,
                     flavor.ram)
            return self.instance(uuid), logs

    def set_password(self, uuid: str, user: str, password: str) -> tuple[dict[str, Any], list[StepLog]]:
        """Set ``user``'s password in the running instance now (a VM: through its guest agent); the node keeps
        it nowhere. A stopped instance is a Conflict; so is a host, which takes it from the metadata service."""
        with self._lock:
            record = self._record(uuid)
            if record.power == "off":
                raise Conflict(f"instance '{uuid}' is {InstanceStatus.SHUTOFF}: start it to set a password in it",
                               field="uuid")
            logs = run_steps(f"set password of instance {uuid}",
                             [Step(f"set password of {user} in {self._runtime.machine}",
                                   lambda: self._runtime.set_password(uuid, user, password))])
            log.info("password of user %s set in instance %s", user, uuid)
            return self.instance(uuid), logs

    # -- NICs and volumes --------------------------------------------------
    def add_nic(self, uuid: str, port_id: str, mac: str, network_id: str | None = None, *,
                qos_pps: int | None = None, vf: NicVf | None = None) -> tuple[dict[str, Any], list[StepLog]]:
        """Plug a new NIC (a net function) into the instance; a VF (a remote-managed NIC) is given at build
        only, as Nova refuses to attach such a port."""
        if vf is not None:
            raise InvalidInput("a remote-managed NIC's VF is given when the instance is built, not plugged later",
                               field="vf")
        with self._lock:
            self._record(uuid)
            self._check_port(uuid, port_id, field="port_id")
            if (binding := self._store.get(PortBinding, port_id)) is not None and binding.desired == PRESENT:
                return self.instance(uuid), []
            steps = self._steps.add_nic(uuid, port_id, mac, network_id, qos_pps)
            steps += self._plug_steps(uuid, net_function_id(port_id))
            logs = run_steps(f"add NIC {port_id} to instance {uuid}", steps)
            return self.instance(uuid), logs

    def remove_nic(self, uuid: str, port_id: str) -> tuple[dict[str, Any], list[StepLog]]:
        """Unplug the representor from the switch, then delete its function."""
        with self._lock:
            self._record(uuid)
            functions = self._store.find(FunctionRecord, instance_uuid=uuid, port_id=port_id)
            steps = self._unplug_steps(uuid, functions)
            binding = self._store.get(PortBinding, port_id)
            if binding is not None and binding.instance_uuid == uuid:
                steps.append(self._steps.unplug(binding))
            steps += [self._steps.delete_function(function) for function in functions]
            logs = run_steps(f"remove NIC {port_id} from instance {uuid}", steps)
            self.sync_metadata()
            return self.instance(uuid), logs

    def add_volume(self, uuid: str, volume_id: str, uri: str,
                   bootable: bool) -> tuple[dict[str, Any], list[StepLog]]:
        with self._lock:
            self._record(uuid)
            self._check_volume(uuid, volume_id, field="volume_id")
            if (binding := self._store.get(VolumeBinding, volume_id)) is not None and binding.desired == PRESENT:
                return self.instance(uuid), []
            steps = self._steps.add_volume(uuid, volume_id, uri, bootable)
            steps += self._plug_steps(uuid, storage_function_id(volume_id))
            logs = run_steps(f"add volume {volume_id} to instance {uuid}", steps)
            return self.instance(uuid), logs

    def remove_volume(self, uuid: str, volume_id: str) -> tuple[dict[str, Any], list[StepLog]]:
        """Delete the volume's function (the host lets go of the disk), then detach the volume from storage."""
        with self._lock:
            self._record(uuid)
            functions = self._store.find(FunctionRecord, instance_uuid=uuid, volume_id=volume_id)
            steps = self._unplug_steps(uuid, functions)
            steps += [self._steps.delete_function(function) for function in functions]
            binding = self._store.get(VolumeBinding, volume_id)
            if binding is not None and binding.instance_uuid == uuid:
                steps.append(self._steps.detach(binding))
            logs = run_steps(f"remove volume {volume_id} from instance {uuid}", steps)
            return self.instance(uuid), logs

    # -- metadata ----------------------------------------------------------
    def sync_metadata(self) -> list[str]:
        """Serve metadata on exactly the networks in use; a failure is logged, the next reconcile retries."""
        if self._metadata is None:
            return []
        try:
            return self._metadata.sync(metadata_networks(self._store))
        except DpustackError as exc:
            log.warning("metadata service: %s", exc.message)
            return []

    # -- steps -------------------------------------------------------------
    def _power_step(self, uuid: str, target: PowerState, *, undoable: bool = True) -> Step:
        """Turn the instance on or off, recording it on its record (if it has one yet) first."""
        runtime = self._runtime
        saved = self._store.get(InstanceRecord, uuid)
        seen: dict[str, Any] = {}

        def do() -> None:
            seen["before"], seen["paused"] = runtime.power_state(uuid), runtime.paused(uuid)
            if saved is not None:
                self._store.update(InstanceRecord, uuid, power=target, status=STATUS_BY_POWER[target])
            runtime.switch_power(uuid, target)

        def undo() -> None:
            if saved is not None:
                self._store.update(InstanceRecord, uuid, power=saved.power, status=saved.status)
            if seen.get("before", target) != target:
                runtime.switch_power(uuid, seen["before"])
            if seen.get("paused") and not runtime.paused(uuid):  # a paused VM the step resumed (start, stop)
                runtime.pause(uuid)

        return Step(f"power {target} {runtime.machine}", do, undo if undoable else None)

    def _plug_steps(self, uuid: str, function_id: str) -> list[Step]:
        """Give the instance its new function, if its runtime passes functions (a VM)."""
        if not self._runtime.passes_functions:
            return []

        def plug() -> None:
            function = self._store.get(FunctionRecord, function_id)
            assert function is not None and function.bdf, "the create step records the function's BDF"
            self._runtime.plug(uuid, instance_function(self._store, function))
            self._remember_slots(uuid)

        def unplug() -> None:
            self._runtime.unplug(uuid, function_id)
            self._remember_slots(uuid)

        return [Step(f"plug {function_id} into {self._runtime.machine}", plug, unplug)]

    def _unplug_steps(self, uuid: str, functions: list[FunctionRecord]) -> list[Step]:
        """Take the functions from the instance before they go, if its runtime passes functions."""
        if not self._runtime.passes_functions:
            return []
        return [self._unplug_step(uuid, function) for function in functions]

    def _unplug_step(self, uuid: str, function: FunctionRecord) -> Step:
        def unplug() -> None:
            self._runtime.unplug(uuid, function.id)
            self._remember_slots(uuid)

        def plug() -> None:
            self._runtime.plug(uuid, instance_function(self._store, function))
            self._remember_slots(uuid)

        return Step(f"unplug {function.id} from {self._runtime.machine}", unplug, plug)

    def record_step(self, request: BuildRequest) -> Step:
        """Record the instance as ``request`` builds it, with its guest slots now; undo: forget it."""
        spec = request.model_dump(include={"image", "flavor", "networks", "volumes", "pci_devices",  # no user_data:
                                           "numa_placement"})                                     # secrets
        power = request.power

        def record() -> None:
            self._store.put(InstanceRecord(uuid=request.uuid, name=request.name, status=STATUS_BY_POWER[power],
                                           power=power, vcpus=request.flavor.vcpus, ram=request.flavor.ram,
                                           spec={**spec, "slots": self._runtime.layout(request.uuid)}))

        return Step("record instance", record, lambda: self._store.remove(InstanceRecord, request.uuid))

    def _remember_slots(self, uuid: str) -> None:
        """Keep the guest slots of the instance's functions in its record, for a domain defined again (by the
        reconciler, after the host lost it) to have each where the guest saw it."""
        record = self._store.get(InstanceRecord, uuid)
        if record is not None:
            self._store.update(InstanceRecord, uuid, spec={**(record.spec or {}), "slots": self._runtime.layout(uuid)})

    # -- checks ------------------------------------------------------------
    def _record(self, uuid: str) -> InstanceRecord:
        record = self._store.get(InstanceRecord, uuid)
        if record is None:
            raise NotFound(f"instance '{uuid}' not found on this node", field="uuid")
        return record

    def check_build(self, request: BuildRequest) -> None:
        """Refuse a build this node cannot take: no room, a port or volume twice or plugged elsewhere here."""
        hosted = {r.uuid for r in self._store.find(InstanceRecord)}
        hosted |= {f.instance_uuid for f in self._store.find(FunctionRecord) if f.instance_uuid}
        self._runtime.check_room(request.uuid, hosted)
        _check_unique([n.port_id for n in request.networks], "networks", "port_id")
        _check_unique([n.mac for n in request.networks], "networks", "mac")
        _check_unique([v.volume_id for v in request.volumes], "volumes", "volume_id")
        devices = {device.address for device in request.pci_devices}
        for index, nic in enumerate(request.networks):
            self._check_port(request.uuid, nic.port_id, field=f"networks.{index}.port_id")
            if nic.vf is not None and not self._runtime.passes_functions:
                raise InvalidInput(f"networks.{index}.vf: a NIC is a VF passed through only in a VM; this node's "
                                   f"instances are {self._runtime.machine}s", field=f"networks.{index}.vf")
            if nic.vf is not None and nic.vf.address not in devices:
                raise InvalidInput(f"networks.{index}.vf.address: VF {nic.vf.address} is not among the instance's "
                                   "pci_devices", field=f"networks.{index}.vf.address")
        for index, volume in enumerate(request.volumes):
            self._check_volume(request.uuid, volume.volume_id, field=f"volumes.{index}.volume_id")

    def _check_port(self, uuid: str, port_id: str, *, field: str) -> None:
        records = (self._store.get(PortBinding, port_id), self._store.get(FunctionRecord, net_function_id(port_id)))
        if any(record is not None and record.instance_uuid != uuid for record in records):
            raise Conflict(f"port '{port_id}' is already plugged elsewhere on this node", field=field)

    def _check_volume(self, uuid: str, volume_id: str, *, field: str) -> None:
        records = (self._store.get(VolumeBinding, volume_id),
                   self._store.get(FunctionRecord, storage_function_id(volume_id)))
        if any(record is not None and record.instance_uuid != uuid for record in records):
            raise Conflict(f"volume '{volume_id}' is already attached elsewhere on this node", field=field)


def _request_of(record: InstanceRecord, spec: dict[str, Any]) -> BuildRequest:
    """The build request of a recorded instance, from its record's ``spec`` (no user data: not kept; its guest
    slots are the runtime's, not the request's)."""
    request = {key: value for key, value in spec.items() if key not in ("slots", LEAVING, LEFT)}
    return BuildRequest.model_validate({**request, "uuid": record.uuid, "name": record.name})


def _check_unique(values: list[str], collection: str, name: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            field = f"{collection}.{index}.{name}"
            raise InvalidInput(f"{field}: '{value}' appears twice", field=field)
        seen.add(value)
