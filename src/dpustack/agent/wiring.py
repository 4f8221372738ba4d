"""Record first, then wire the hardware: host functions, switch ports, volume attachments.

``ensure_*`` writes the record as present and makes the driver match it;
``remove_*`` tombstones the record, removes the resource from the driver
(if it is there) and then forgets the record. All of them are idempotent, so
they double as the undo of one another.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from dpustack.agent.hardware import DriverSet
from dpustack.agent.store import (ABSENT, PRESENT, AgentStore, FunctionRecord, PortBinding,
                                  VolumeBinding)
from dpustack.drivers.functions import FunctionKind, FunctionSpec, FunctionType, slot_of
from dpustack.errors import DpustackError, DriverError

log = logging.getLogger(__name__)


def spec_of(record: FunctionRecord) -> FunctionSpec:
    """The driver request for a recorded function."""
    return FunctionSpec(id=record.id, slot=record.slot, type=record.type, kind=record.kind,
                        mac=record.mac, features=tuple(record.features or ()))


class Wiring:
    """The host functions, switch ports and volume attachments of one node."""

    def __init__(self, store: AgentStore, drivers: DriverSet):
        self._store = store
        self._drivers = drivers

    # -- functions ---------------------------------------------------------
    def new_function(self, function_id: str, *, kind: FunctionKind, type_: FunctionType = "PF",
                     mac: str | None = None, features: tuple[str, ...] = (), instance_uuid: str | None = None,
                     port_id: str | None = None, volume_id: str | None = None,
                     bdf: str | None = None) -> FunctionRecord:
        """Record a function, giving it a slot no recorded or existing function uses: the slot of host address
        ``bdf`` (where it was before) if that one is free."""
        taken = {function.slot for function in self._drivers.functions.list()}
        slot = self._store.free_slot(taken, prefer=slot_of(bdf) if bdf else None)
        return self._store.put(FunctionRecord(
            id=function_id, slot=slot, type=type_, kind=kind, mac=mac,
            features=list(features), instance_uuid=instance_uuid, port_id=port_id, volume_id=volume_id,
            desired=PRESENT))

    def ensure_function(self, record: FunctionRecord) -> FunctionRecord:
        """Make the recorded function exist; it keeps its slot, hence its BDF and representor."""
        record.desired = PRESENT
        record = self._store.put(record)
        function = self._drivers.functions.create(spec_of(record))
        if record.bdf and function.bdf != record.bdf:
            raise DriverError(f"function '{record.id}' came back at {function.bdf}, not at {record.bdf}")
        return self._store.update(FunctionRecord, record.id, bdf=function.bdf,
                                  representor=function.representor)

    def remove_function(self, function_id: str) -> None:
        """Delete the function from the host and forget it."""
        if self._store.get(FunctionRecord, function_id) is not None:
            self._store.update(FunctionRecord, function_id, desired=ABSENT)
        self._drivers.functions.delete(function_id, if_exists=True)
        self._store.remove(FunctionRecord, function_id)

    # -- switch ports ------------------------------------------------------
    def ensure_port(self, binding: PortBinding, *, reopen: bool = False) -> PortBinding:
        """Plug the recorded port with its external_ids; with ``reopen``, unplug it first so the
        switch opens its netdev afresh (the function behind it was re-created)."""
        binding.desired = PRESENT
        binding = self._store.put(binding)
        if reopen:
            self._drivers.switch.del_port(binding.bridge, binding.port_name, if_exists=True)
        self._drivers.switch.add_port(binding.bridge, binding.port_name, binding.external_ids)
        if binding.qos_pps is not None:
            self.apply_packet_rate(binding)
        return binding

    def ensure_ports(self, bindings: list[PortBinding], *, reopen: Collection[str] = ()) -> None:
        """Plug several recorded ports with one switch call per bridge (one transaction on OVS);
        the ports whose ids are in ``reopen`` are unplugged first, all at once, as ``ensure_port`` does."""
        by_bridge: dict[str, dict[str, dict[str, str]]] = {}
        for binding in bindings:
            binding.desired = PRESENT
            binding = self._store.put(binding)
            by_bridge.setdefault(binding.bridge, {})[binding.port_name] = binding.external_ids
        stale = {(b.bridge, b.port_name) for b in bindings if b.port_id in reopen}
        for bridge, ports in by_bridge.items():
            unplug = [name for name in ports if (bridge, name) in stale]
            if unplug:
                self._drivers.switch.unplug_many(bridge, unplug)
            self._drivers.switch.plug_many(bridge, ports)
        for binding in bindings:
            if binding.qos_pps is not None:
                self.apply_packet_rate(binding)

    def apply_packet_rate(self, binding: PortBinding) -> None:
        """Make the switch limit the plugged port to its recorded ``qos_pps`` (None: no limit)."""
        self._drivers.switch.set_packet_rate(binding.bridge, binding.port_name, binding.qos_pps)

    def set_packet_rate(self, port_id: str, pps: int | None) -> PortBinding:
        """Record a plugged port's packet-rate limit and apply it; if the switch refuses, the old one stays."""
        binding = self._store.get(PortBinding, port_id)
        if binding is None or binding.desired != PRESENT:
            raise LookupError(port_id)
        previous = binding.qos_pps
        binding = self._store.update(PortBinding, port_id, qos_pps=pps)
        try:
            self.apply_packet_rate(binding)
        except Exception:
            binding = self._store.update(PortBinding, port_id, qos_pps=previous)
            try:  # undo whatever half of the change the switch made
                self.apply_packet_rate(binding)
            except DpustackError as exc:
                log.warning("restoring the packet-rate limit of port %s: %s (the reconcile retries it)",
                            port_id, exc.message)
            raise
        return binding

    def remove_port(self, port_id: str) -> None:
        """Unplug the port and forget it."""
        binding = self._store.get(PortBinding, port_id)
        if binding is None:
            return
        self._store.update(PortBinding, port_id, desired=ABSENT)
        if binding.qos_pps is not None:  # its meter and flow would outlive the port
            try:
                self._drivers.switch.set_packet_rate(binding.bridge, binding.port_name, None)
            except DpustackError as exc:
                log.warning("removing the packet-rate limit of port %s: %s", port_id, exc.message)
        self._drivers.switch.del_port(binding.bridge, binding.port_name, if_exists=True)
        self._store.remove(PortBinding, port_id)

    # -- volume attachments ------------------------------------------------
    def ensure_attachment(self, binding: VolumeBinding) -> VolumeBinding:
        """Serve the recorded volume through its storage function."""
        binding.desired = PRESENT
        binding = self._store.put(binding)
        self._drivers.storage.attach(binding.function_id, binding.volume_id, binding.uri)
        return binding

    def remove_attachment(self, volume_id: str) -> None:
        """Detach the volume from its function and forget the binding."""
        binding = self._store.get(VolumeBinding, volume_id)
        if binding is None:
            return
        self._store.update(VolumeBinding, volume_id, desired=ABSENT)
        self._drivers.storage.detach(binding.function_id, volume_id, if_exists=True)
        self._store.remove(VolumeBinding, volume_id)
