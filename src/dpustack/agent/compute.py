"""The compute role for bare metal: seed 000's instance lifecycle as steps with undo.

A bare-metal node hosts at most one instance. Building it plugs one storage
function per volume and one net function per NIC into the host, then powers
the host on. Function ids are derived from the port or volume they serve
(``net-<port>``, ``storage-<volume>``), so a repeated call finds its own work.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dpustack.agent.hardware import DriverSet
from dpustack.agent.metadata import MetadataProxies
from dpustack.agent.resources import Resources
from dpustack.agent.steps import Step, run_steps
from dpustack.agent.store import PRESENT, AgentStore, FunctionRecord, InstanceRecord, PortBinding, VolumeBinding
from dpustack.contract.instances import BuildRequest, StepLog
from dpustack.drivers.bmc import Console, PowerState, RebootKind
from dpustack.errors import Conflict, DpustackError, InvalidInput, NotFound

log = logging.getLogger(__name__)

STATUS_BY_POWER = {"on": "ACTIVE", "off": "SHUTOFF"}


def net_function_id(port_id: str) -> str:
    return f"net-{port_id}"


def storage_function_id(volume_id: str) -> str:
    return f"storage-{volume_id}"


class BareMetalCompute:
    """Instance lifecycle on a bare-metal node; every action is serialized by ``lock``."""

    def __init__(self, store: AgentStore, drivers: DriverSet, resources: Resources, *, bridge: str,
                 lock: threading.RLock, metadata: MetadataProxies | None = None):
        self._store = store
        self._drivers = drivers
        self._resources = resources
        self._bridge = bridge
        self._lock = lock
        self._metadata = metadata

    # -- queries -----------------------------------------------------------
    def instances(self) -> list[dict[str, Any]]:
        return [self.view(record) for record in self._store.find(InstanceRecord)]

    def instance(self, uuid: str) -> dict[str, Any]:
        return self.view(self._record(uuid))

    def console(self, uuid: str) -> Console:
        self._record(uuid)
        return self._drivers.bmc.console()

    def view(self, record: InstanceRecord) -> dict[str, Any]:
        """AgentInstance: the record with its NICs and volumes as recorded."""
        functions = {f.id: f for f in self._store.find(FunctionRecord, instance_uuid=record.uuid)}
        nics = []
        for binding in self._store.find(PortBinding, instance_uuid=record.uuid, desired=PRESENT):
            function = functions.get(binding.function_id or "")
            nics.append({"port_id": binding.port_id, "mac": binding.mac, "function_id": binding.function_id,
                         "bdf": function.bdf if function else None,
                         "representor": function.representor if function else None})
        volumes = []
        for volume in self._store.find(VolumeBinding, instance_uuid=record.uuid, desired=PRESENT):
            function = functions.get(volume.function_id)
            volumes.append({"volume_id": volume.volume_id, "uri": volume.uri, "bootable": volume.bootable,
                            "function_id": volume.function_id, "bdf": function.bdf if function else None})
        return {"uuid": record.uuid, "name": record.name, "status": record.status, "power_state": record.power,
                "vcpus": record.vcpus, "ram": record.ram, "fault": record.fault, "nics": nics, "volumes": volumes,
                "pci_devices": (record.spec or {}).get("pci_devices", [])}

    # -- build and delete --------------------------------------------------
    def build(self, request: BuildRequest) -> tuple[dict[str, Any], list[StepLog]]:
        """Seed 000 build_and_run_instance; building an existing instance returns it."""
        with self._lock:
            existing = self._store.get(InstanceRecord, request.uuid)
            if existing is not None:
                return self.view(existing), []
            self._check_build(request)
            steps: list[Step] = []
            for volume in request.volumes:
                steps += self._volume_steps(request.uuid, volume.volume_id, volume.uri, volume.bootable)
            for nic in request.networks:
                steps += self._nic_steps(request.uuid, nic.port_id, nic.mac, nic.network_id, nic.qos_pps)
            steps.append(self._power_step(None, "on"))
            steps.append(self._record_step(request))
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
            steps = [self._power_step(uuid if record else None, "off", undoable=False)]
            for function in sorted(functions, key=lambda f: f.kind != "net"):  # NICs first, as the seed does
                if (port := ports.pop(function.id, None)) is not None:
                    steps.append(self._unplug_step(port))
                if (volume := volumes.pop(function.id, None)) is not None:
                    steps.append(self._detach_step(volume))
                steps.append(self._delete_function_step(function))
            steps += [self._unplug_step(port) for port in ports.values()]
            steps += [self._detach_step(volume) for volume in volumes.values()]
            steps.append(Step("forget instance", lambda: self._store.remove(InstanceRecord, uuid)))
            logs = run_steps(f"delete of instance {uuid}", steps, rollback=False)
            log.info("deleted instance %s", uuid)
            self.sync_metadata()
            return logs

    # -- power -------------------------------------------------------------
    def set_power(self, uuid: str, target: PowerState) -> tuple[dict[str, Any], list[StepLog]]:
        """Stop (``off``) or start (``on``) the host; its functions stay plugged."""
        with self._lock:
            self._record(uuid)
            logs = run_steps(f"power {target} of instance {uuid}", [self._power_step(uuid, target)])
            return self.instance(uuid), logs

    def power_host(self, target: PowerState) -> PowerState:
        """The BMC API's power_on/power_off: switch the host, then note its state on the instance."""
        with self._lock:
            bmc = self._drivers.bmc
            if target == "on":
                bmc.power_on()
            else:
                bmc.power_off()
            state = bmc.power_state()
            for record in self._store.find(InstanceRecord):
                if record.status != "ERROR":
                    self._store.update(InstanceRecord, record.uuid, power=state, status=STATUS_BY_POWER[state])
            return state

    def reboot(self, uuid: str, kind: RebootKind) -> tuple[dict[str, Any], list[StepLog]]:
        """Hard reboot (also starts a stopped host) or soft reboot (needs a running host)."""
        with self._lock:
            record = self._record(uuid)
            if kind == "soft" and record.power == "off":
                raise Conflict(f"instance '{uuid}' is SHUTOFF: start it, or reboot it hard", field="type")

            def reboot() -> None:
                self._store.update(InstanceRecord, uuid, power="on", status="ACTIVE")
                self._drivers.bmc.reboot(kind)

            def restore() -> None:
                self._store.update(InstanceRecord, uuid, power=record.power, status=record.status)

            logs = run_steps(f"{kind} reboot of instance {uuid}", [Step(f"{kind} reboot host", reboot, restore)])
            return self.instance(uuid), logs

    # -- NICs and volumes --------------------------------------------------
    def add_nic(self, uuid: str, port_id: str, mac: str, network_id: str | None = None, *,
                qos_pps: int | None = None) -> tuple[dict[str, Any], list[StepLog]]:
        with self._lock:
            self._record(uuid)
            self._check_port(uuid, port_id, field="port_id")
            if (binding := self._store.get(PortBinding, port_id)) is not None and binding.desired == PRESENT:
                return self.instance(uuid), []
            steps = self._nic_steps(uuid, port_id, mac, network_id, qos_pps)
            logs = run_steps(f"add NIC {port_id} to instance {uuid}", steps)
            return self.instance(uuid), logs

    def remove_nic(self, uuid: str, port_id: str) -> tuple[dict[str, Any], list[StepLog]]:
        """Unplug the representor from the switch, then delete its function."""
        with self._lock:
            self._record(uuid)
            steps: list[Step] = []
            binding = self._store.get(PortBinding, port_id)
            if binding is not None and binding.instance_uuid == uuid:
                steps.append(self._unplug_step(binding))
            for function in self._store.find(FunctionRecord, instance_uuid=uuid, port_id=port_id):
                steps.append(self._delete_function_step(function))
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
            steps = self._volume_steps(uuid, volume_id, uri, bootable)
            logs = run_steps(f"add volume {volume_id} to instance {uuid}", steps)
            return self.instance(uuid), logs

    def remove_volume(self, uuid: str, volume_id: str) -> tuple[dict[str, Any], list[StepLog]]:
        """Detach the volume from storage, then delete its function."""
        with self._lock:
            self._record(uuid)
            steps: list[Step] = []
            binding = self._store.get(VolumeBinding, volume_id)
            if binding is not None and binding.instance_uuid == uuid:
                steps.append(self._detach_step(binding))
            for function in self._store.find(FunctionRecord, instance_uuid=uuid, volume_id=volume_id):
                steps.append(self._delete_function_step(function))
            logs = run_steps(f"remove volume {volume_id} from instance {uuid}", steps)
            return self.instance(uuid), logs

    # -- metadata ----------------------------------------------------------
    def metadata_networks(self) -> set[str]:
        """The networks this node has a port on: it serves metadata on each."""
        return {b.network_id for b in self._store.find(PortBinding, desired=PRESENT) if b.network_id}

    def sync_metadata(self) -> list[str]:
        """Serve metadata on exactly the networks in use; a failure is logged, the next reconcile retries."""
        if self._metadata is None:
            return []
        try:
            return self._metadata.sync(self.metadata_networks())
        except DpustackError as exc:
            log.warning("metadata service: %s", exc.message)
            return []

    # -- step builders -----------------------------------------------------
    def _nic_steps(self, uuid: str, port_id: str, mac: str, network_id: str | None = None,
                   qos_pps: int | None = None) -> list[Step]:
        """Create the net function and plug its representor (limited to ``qos_pps`` packets/s, if given)."""
        function_id = net_function_id(port_id)

        def create() -> None:
            record = self._store.get(FunctionRecord, function_id) or self._resources.new_function(
                function_id, kind="net", mac=mac, instance_uuid=uuid, port_id=port_id)
            self._resources.ensure_function(record)

        def plug() -> None:
            function = self._store.get(FunctionRecord, function_id)
            assert function is not None and function.representor, "the create step records the representor"
            self._resources.ensure_port(PortBinding(
                port_id=port_id, bridge=self._bridge, port_name=function.representor, function_id=function_id,
                mac=function.mac, instance_uuid=uuid, network_id=network_id, qos_pps=qos_pps))

        steps = [Step(f"create net function {function_id}", create,
                      lambda: self._resources.remove_function(function_id)),
                 Step(f"plug port {port_id} into {self._bridge}", plug,
                      lambda: self._resources.remove_port(port_id))]
        if self._metadata is not None and network_id:
            metadata = self._metadata
            steps.append(Step(f"serve metadata on network {network_id}", lambda: metadata.ensure(network_id),
                              lambda: metadata.sync(self.metadata_networks())))
        return steps

    def _volume_steps(self, uuid: str, volume_id: str, uri: str, bootable: bool) -> list[Step]:
        function_id = storage_function_id(volume_id)

        def create() -> None:
            record = self._store.get(FunctionRecord, function_id) or self._resources.new_function(
                function_id, kind="storage", instance_uuid=uuid, volume_id=volume_id)
            self._resources.ensure_function(record)

        def attach() -> None:
            self._resources.ensure_attachment(VolumeBinding(
                volume_id=volume_id, function_id=function_id, uri=uri, bootable=bootable, instance_uuid=uuid))

        return [Step(f"create storage function {function_id}", create,
                     lambda: self._resources.remove_function(function_id)),
                Step(f"attach volume {volume_id}", attach,
                     lambda: self._resources.remove_attachment(volume_id))]

    def _unplug_step(self, binding: PortBinding) -> Step:
        return Step(f"unplug port {binding.port_id} from {binding.bridge}",
                    lambda: self._resources.remove_port(binding.port_id),
                    lambda: self._resources.ensure_port(binding))

    def _detach_step(self, binding: VolumeBinding) -> Step:
        return Step(f"detach volume {binding.volume_id}",
                    lambda: self._resources.remove_attachment(binding.volume_id),
                    lambda: self._resources.ensure_attachment(binding))

    def _delete_function_step(self, function: FunctionRecord) -> Step:
        return Step(f"delete {function.kind} function {function.id}",
                    lambda: self._resources.remove_function(function.id),
                    lambda: self._resources.ensure_function(function))

    def _power_step(self, uuid: str | None, target: PowerState, *, undoable: bool = True) -> Step:
        """Turn the host on or off, recording it on the instance (if any) first."""
        bmc = self._drivers.bmc
        saved = self._store.get(InstanceRecord, uuid) if uuid else None
        seen: dict[str, PowerState] = {}

        def switch(state: PowerState) -> None:
            if state == "on":
                bmc.power_on()
            else:
                bmc.power_off()

        def do() -> None:
            seen["before"] = bmc.power_state()
            if saved is not None:
                self._store.update(InstanceRecord, saved.uuid, power=target, status=STATUS_BY_POWER[target])
            switch(target)

        def undo() -> None:
            if saved is not None:
                self._store.update(InstanceRecord, saved.uuid, power=saved.power, status=saved.status)
            if seen.get("before", target) != target:
                switch(seen["before"])

        return Step(f"power {target} host", do, undo if undoable else None)

    def _record_step(self, request: BuildRequest) -> Step:
        spec = request.model_dump(include={"image", "flavor", "networks", "volumes", "pci_devices"})  # no user_data: secrets
        record = InstanceRecord(uuid=request.uuid, name=request.name, status="ACTIVE", power="on",
                                vcpus=request.flavor.vcpus, ram=request.flavor.ram, spec=spec)
        return Step("record instance", lambda: self._store.put(record),
                    lambda: self._store.remove(InstanceRecord, request.uuid))

    # -- checks ------------------------------------------------------------
    def _record(self, uuid: str) -> InstanceRecord:
        record = self._store.get(InstanceRecord, uuid)
        if record is None:
            raise NotFound(f"instance '{uuid}' not found on this node", field="uuid")
        return record

    def _check_build(self, request: BuildRequest) -> None:
        owners = {r.uuid for r in self._store.find(InstanceRecord)}
        owners |= {f.instance_uuid for f in self._store.find(FunctionRecord) if f.instance_uuid}
        owners.discard(request.uuid)
        if owners:
            raise Conflict(f"this bare-metal node already hosts instance '{sorted(owners)[0]}'", field="uuid")
        _check_unique([n.port_id for n in request.networks], "networks", "port_id")
        _check_unique([n.mac for n in request.networks], "networks", "mac")
        _check_unique([v.volume_id for v in request.volumes], "volumes", "volume_id")
        for index, nic in enumerate(request.networks):
            self._check_port(request.uuid, nic.port_id, field=f"networks.{index}.port_id")
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


def _check_unique(values: list[str], collection: str, name: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            field = f"{collection}.{index}.{name}"
            raise InvalidInput(f"{field}: '{value}' appears twice", field=field)
        seen.add(value)
