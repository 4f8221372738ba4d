"""Host functions, storage devices and switch ports made directly, outside any instance.

These serve operators and the controller's own plumbing (e.g. remote-managed
ports). Like the compute role they record first, converge through
:class:`~dpustack.agent.wiring.Wiring`, and undo their own work on a
failure. Deleting something the store does not know still asks the driver to
delete it: that is how an operator clears an orphan.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from dpustack.agent.hardware import DriverSet
from dpustack.agent.instance_steps import storage_function_id
from dpustack.agent.schemas import FunctionCreate, StorageDeviceCreate, SwitchPortCreate
from dpustack.agent.steps import Step, run_steps
from dpustack.agent.store import PRESENT, AgentStore, FunctionRecord, PortBinding, VolumeBinding
from dpustack.agent.wiring import Wiring
from dpustack.contract.switch import SwitchPortQos
from dpustack.errors import Conflict, NotFound


def function_view(function: Any) -> dict[str, Any]:
    """Function as the API shows it, from a driver Function or a FunctionRecord."""
    return {"id": function.id, "type": function.type, "kind": function.kind, "mac": function.mac,
            "bdf": function.bdf, "features": list(function.features or ()), "representor": function.representor}


class StandaloneDevices:
    """Functions, storage devices and switch ports not tied to an instance."""

    def __init__(self, store: AgentStore, drivers: DriverSet, wiring: Wiring, *, lock: threading.RLock):
        self._store = store
        self._drivers = drivers
        self._wiring = wiring
        self._lock = lock

    # -- functions ---------------------------------------------------------
    def functions(self) -> list[dict[str, Any]]:
        """Every function the snic controller has (observed, including orphans)."""
        return [function_view(f) for f in self._drivers.functions.list()]

    def function(self, function_id: str) -> dict[str, Any]:
        function = self._drivers.functions.get(function_id)
        if function is None:
            raise NotFound(f"function '{function_id}' not found", field="id")
        return function_view(function)

    def create_function(self, body: FunctionCreate) -> dict[str, Any]:
        """Create a net PF/VF; creating one that exists with the same settings returns it."""
        function_id = body.id or str(uuid.uuid4())
        with self._lock:
            record = self._store.get(FunctionRecord, function_id)
            if record is not None and (record.instance_uuid, record.kind, record.type, record.mac,
                                       list(record.features)) != (None, "net", body.type, body.mac, body.features):
                raise Conflict(f"function '{function_id}' exists with other settings", field="id")

            def create() -> None:
                self._wiring.ensure_function(record or self._wiring.new_function(
                    function_id, kind="net", type_=body.type, mac=body.mac, features=tuple(body.features)))

            undo = None if record else (lambda: self._wiring.remove_function(function_id))
            run_steps(f"create function {function_id}", [Step(f"create net function {function_id}", create, undo)])
            return self._recorded_function(function_id)

    def create_storage_device(self, body: StorageDeviceCreate) -> dict[str, Any]:
        """Create a storage function serving ``volume_id``; repeating the call returns it."""
        function_id = body.id or storage_function_id(body.volume_id)
        with self._lock:
            record = self._store.get(FunctionRecord, function_id)
            binding = self._store.get(VolumeBinding, body.volume_id)
            if record is not None and (record.instance_uuid, record.kind) != (None, "storage"):
                raise Conflict(f"function '{function_id}' exists and is not a free storage device", field="id")
            if binding is not None and (binding.function_id, binding.instance_uuid) != (function_id, None):
                raise Conflict(f"volume '{body.volume_id}' is attached elsewhere on this node", field="volume_id")
            # Asking again is fine, with other settings a conflict (as for functions), not a driver failure.
            if binding is not None and binding.uri != body.uri:
                raise Conflict(f"volume '{body.volume_id}' is attached from {binding.uri}", field="uri")
            served = [b.volume_id for b in self._store.find(VolumeBinding, function_id=function_id)
                      if b.volume_id != body.volume_id]
            if served:
                raise Conflict(f"storage device '{function_id}' serves volume '{served[0]}'", field="id")

            def create() -> None:
                self._wiring.ensure_function(record or self._wiring.new_function(
                    function_id, kind="storage", volume_id=body.volume_id))

            def attach() -> None:
                self._wiring.ensure_attachment(VolumeBinding(volume_id=body.volume_id, function_id=function_id,
                                                                uri=body.uri))

            run_steps(f"create storage device {function_id}", [
                Step(f"create storage function {function_id}", create,
                     None if record else lambda: self._wiring.remove_function(function_id)),
                Step(f"attach volume {body.volume_id}", attach,
                     None if binding else lambda: self._wiring.remove_attachment(body.volume_id)),
            ])
            return self._recorded_function(function_id)

    def delete_function(self, function_id: str) -> None:
        """Delete a net function; 409 while a port is plugged to it or it belongs to an instance."""
        with self._lock:
            record = self._store.get(FunctionRecord, function_id)
            if record is not None:
                self._check_free(record)
                volumes = self._store.find(VolumeBinding, function_id=function_id, desired=PRESENT)
                if volumes:
                    raise Conflict(f"volume '{volumes[0].volume_id}' is attached to function '{function_id}'; "
                                   f"delete the storage device instead", field="id")
            run_steps(f"delete function {function_id}", [
                Step(f"delete function {function_id}", lambda: self._wiring.remove_function(function_id))],
                rollback=False)

    def delete_storage_device(self, function_id: str) -> None:
        """Detach the volume from a storage function, then delete the function."""
        with self._lock:
            record = self._store.get(FunctionRecord, function_id)
            if record is not None:
                if record.kind != "storage":
                    raise Conflict(f"function '{function_id}' is not a storage device", field="id")
                self._check_free(record)
            steps = [Step(f"detach volume {b.volume_id}",
                          lambda volume_id=b.volume_id: self._wiring.remove_attachment(volume_id))
                     for b in self._store.find(VolumeBinding, function_id=function_id)]
            steps.append(Step(f"delete storage function {function_id}",
                              lambda: self._wiring.remove_function(function_id)))
            run_steps(f"delete storage device {function_id}", steps, rollback=False)

    # -- switch ports ------------------------------------------------------
    def ports(self, bridge: str | None = None) -> list[dict[str, Any]]:
        """Ports on the switch (observed), with the function each one is known to carry."""
        bindings = {(b.bridge, b.port_name): b for b in self._store.find(PortBinding)}
        return [_port_view(p.bridge, p.name, p.external_ids, bindings.get((p.bridge, p.name)))
                for p in self._drivers.switch.list_ports(bridge)]

    def add_port(self, body: SwitchPortCreate) -> dict[str, Any]:
        """Plug ``port_name`` with ``iface-id = external_id`` (and the MAC of ``pf_id``, if given)."""
        with self._lock:
            function = self._store.get(FunctionRecord, body.pf_id) if body.pf_id else None
            if body.pf_id and function is None:
                raise NotFound(f"function '{body.pf_id}' not found", field="pf_id")
            if function is not None and function.instance_uuid:
                raise Conflict(f"function '{body.pf_id}' belongs to instance '{function.instance_uuid}'",
                               field="pf_id")
            existing = self._store.get(PortBinding, body.external_id)
            wanted = PortBinding(port_id=body.external_id, bridge=body.bridge, port_name=body.port_name,
                                 function_id=body.pf_id, mac=function.mac if function else None)
            if existing is not None and not _same_port(existing, wanted):
                raise Conflict(f"port '{body.external_id}' is already plugged as "
                               f"{existing.bridge}/{existing.port_name}", field="external_id")
            if existing is None and self._store.find(PortBinding, port_name=body.port_name):
                raise Conflict(f"switch port '{body.port_name}' already carries another port", field="port_name")
            if existing is None or existing.desired != PRESENT:
                run_steps(f"add switch port {body.port_name}", [
                    Step(f"plug port {body.external_id} into {body.bridge}",
                         lambda: self._wiring.ensure_port(wanted),
                         None if existing else lambda: self._wiring.remove_port(body.external_id))])
            return _port_view(wanted.bridge, wanted.port_name, wanted.external_ids, wanted)

    def set_port_qos(self, port_id: str, body: SwitchPortQos) -> dict[str, Any]:
        """Set (or with null clear) the packet-rate limit of the plugged cloud port ``port_id``.

        Recorded on the port's binding, so a re-plug and every reconcile pass apply it again; if the
        switch refuses, the binding keeps its old limit.
        """
        with self._lock:
            try:
                binding = self._wiring.set_packet_rate(port_id, body.pps)
            except LookupError:
                raise NotFound(f"port '{port_id}' is not plugged on this node", field="port_id") from None
            return {"port_id": binding.port_id, "bridge": binding.bridge, "port_name": binding.port_name,
                    "pps": binding.qos_pps}

    def delete_port(self, bridge: str, port_name: str) -> None:
        """Unplug a switch port; 409 while it is an instance's NIC."""
        with self._lock:
            bindings = self._store.find(PortBinding, bridge=bridge, port_name=port_name)
            if bindings and bindings[0].instance_uuid:
                raise Conflict(f"port '{port_name}' is a NIC of instance '{bindings[0].instance_uuid}'; "
                               f"remove the NIC instead", field="port_name")

            def unplug() -> None:
                if bindings:
                    self._wiring.remove_port(bindings[0].port_id)
                else:
                    self._drivers.switch.del_port(bridge, port_name, if_exists=True)

            run_steps(f"delete switch port {port_name}", [Step(f"unplug {bridge}/{port_name}", unplug)],
                      rollback=False)

    # -- helpers -----------------------------------------------------------
    def _recorded_function(self, function_id: str) -> dict[str, Any]:
        record = self._store.get(FunctionRecord, function_id)
        assert record is not None, "just created"
        return function_view(record)

    def _check_free(self, record: FunctionRecord) -> None:
        if record.instance_uuid:
            raise Conflict(f"function '{record.id}' belongs to instance '{record.instance_uuid}'", field="id")
        ports = self._store.find(PortBinding, function_id=record.id, desired=PRESENT)
        if ports:
            raise Conflict(f"port '{ports[0].port_id}' is plugged to function '{record.id}'", field="id")


def _same_port(a: PortBinding, b: PortBinding) -> bool:
    return (a.bridge, a.port_name, a.function_id) == (b.bridge, b.port_name, b.function_id)


def _port_view(bridge: str, port_name: str, external_ids: dict[str, str],
               binding: PortBinding | None) -> dict[str, Any]:
    return {"bridge": bridge, "port_name": port_name, "external_ids": dict(external_ids),
            "pf_id": binding.function_id if binding else None}
