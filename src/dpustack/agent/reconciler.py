"""Level-based reconciliation of the store's desired state against the drivers.

Each pass re-reads everything, so a missed event or a crash costs nothing:
tombstoned records are finished off, every volume binding re-attached (a
storage function is plugged into the host only once its disk has a back end),
every recorded function re-created if missing (same id and slot, hence same
BDF and representor), every port binding re-plugged with its external_ids (and
its packet-rate limit re-applied where the switch lost it), and each
instance's power read back from the instance runtime into its record. On a
VM node a domain the host lost is defined again from its record (and started
if the instance was on), and a net function made again is plugged into its
VM again: its tap is new, the guest's NIC was on the old one. What
the drivers have and the store does not know is reported as an orphan and left
alone. A failing item does not stop the others; it marks its instance ERROR
until a later pass converges it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from dpustack.agent.hardware import DriverSet
from dpustack.agent.instance_runtime import InstanceRuntime
from dpustack.agent.instance_steps import instance_function, instance_functions
from dpustack.agent.store import (ABSENT, LEAVING, PRESENT, AgentStore, FunctionRecord, InstanceRecord, PortBinding,
                                  VolumeBinding)
from dpustack.agent.wiring import Wiring, spec_of
from dpustack.contract.instances import BuildRequest
from dpustack.errors import DpustackError
from dpustack.instance_states import observed_status

log = logging.getLogger(__name__)

#: error messages of one pass, by the instance they affect (None: no instance)
_Failures = dict[str | None, list[str]]


@dataclass(frozen=True)
class Orphans:
    """Things the drivers have that the store does not know."""

    functions: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()  # "bridge/port_name"
    volumes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.functions or self.ports or self.volumes)

    def as_dict(self) -> dict[str, list[str]]:
        return {"functions": list(self.functions), "ports": list(self.ports), "volumes": list(self.volumes)}


@dataclass
class ReconcileResult:
    """The outcome of one pass."""

    pass_id: int
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    orphans: Orphans = Orphans()
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


class Reconciler:
    """Converges the whole node; ``run`` holds the agent lock for the pass."""

    def __init__(self, store: AgentStore, drivers: DriverSet, wiring: Wiring, runtime: InstanceRuntime, *,
                 lock: threading.RLock):
        self._store = store
        self._drivers = drivers
        self._wiring = wiring
        self._runtime = runtime
        self._lock = lock
        self._passes = itertools.count(1)
        self.last: ReconcileResult | None = None

    def run(self) -> ReconcileResult:
        """One reconcile pass; never raises for driver errors, it reports them."""
        result = ReconcileResult(next(self._passes))
        started = time.monotonic()
        with self._lock:
            failed_by_instance: _Failures = {}
            try:
                self._finish_removals(result, failed_by_instance)
                self._converge_volumes(result, failed_by_instance)
                recreated, broken = self._converge_functions(result, failed_by_instance)
                self._converge_ports(result, failed_by_instance, recreated, broken)
                self._converge_packet_rates(result, failed_by_instance)
                if self._runtime.passes_functions:
                    self._converge_domains(result, failed_by_instance, recreated)
                self._observe_instances(failed_by_instance)
                result.orphans = self._find_orphans()
            except DpustackError as exc:
                result.errors.append(exc.message)
            for errors in failed_by_instance.values():
                result.errors += errors
        result.duration_ms = int((time.monotonic() - started) * 1000)
        self._log(result)
        self.last = result
        return result

    def _finish_removals(self, result: ReconcileResult, failed: _Failures) -> None:
        """Complete removals a crash or a failed delete left half-done."""
        for port in self._store.find(PortBinding, desired=ABSENT):
            if _attempt(failed, port.instance_uuid, partial(self._wiring.remove_port, port.port_id)):
                result.repaired.append(f"unplugged port {port.port_id}")
        for function in self._store.find(FunctionRecord, desired=ABSENT):
            if _attempt(failed, function.instance_uuid, partial(self._wiring.remove_function, function.id)):
                result.repaired.append(f"deleted function {function.id}")
        for volume in self._store.find(VolumeBinding, desired=ABSENT):
            if _attempt(failed, volume.instance_uuid, partial(self._wiring.remove_attachment, volume.volume_id)):
                result.repaired.append(f"detached volume {volume.volume_id}")

    def _converge_functions(self, result: ReconcileResult, failed: _Failures) -> tuple[set[str], set[str]]:
        """Re-create missing functions; return the ids re-created and the ids that could not be."""
        observed = {f.id: f for f in self._drivers.functions.list()}
        recreated: set[str] = set()
        broken: set[str] = set()
        for record in self._store.find(FunctionRecord, desired=PRESENT):
            function = observed.get(record.id)
            if function is not None and function.matches(spec_of(record)):
                continue
            if _attempt(failed, record.instance_uuid, partial(self._wiring.ensure_function, record)):
                result.repaired.append(f"re-created function {record.id} at {record.bdf}")
                recreated.add(record.id)
            else:
                broken.add(record.id)
        return recreated, broken

    def _converge_ports(self, result: ReconcileResult, failed: _Failures, recreated: set[str],
                        broken: set[str]) -> None:
        """Re-plug missing ports all at once (after a SoC reboot that is every port); if that fails,
        one by one, so one bad port does not hold the others back and each error finds its instance.

        A port still plugged whose function was just re-created is re-plugged too: its representor
        is a new netdev under the old name, and the switch may still hold the old one (ovs-vswitchd's
        userspace datapath does: the port shows ofport and no error, and passes no traffic).
        """
        observed = {(p.bridge, p.name): p.external_ids for p in self._drivers.switch.list_ports()}
        missing: list[PortBinding] = []
        stale: set[str] = set()  # port ids to unplug before plugging again
        for binding in self._store.find(PortBinding, desired=PRESENT):
            have = observed.get((binding.bridge, binding.port_name))
            fresh = binding.function_id not in recreated
            if have is not None and fresh and all(have.get(k) == v for k, v in binding.external_ids.items()):
                continue
            if binding.function_id in broken:
                failed.setdefault(binding.instance_uuid, []).append(
                    f"port {binding.port_id} waits for function {binding.function_id}")
                continue
            missing.append(binding)
            if have is not None and not fresh:
                stale.add(binding.port_id)
        if len(missing) > 1:
            try:
                self._wiring.ensure_ports(missing, reopen=stale)
            except DpustackError as exc:
                log.info("re-plugging %d ports at once failed, trying one by one: %s", len(missing), exc.message)
            else:
                result.repaired += [_replugged(binding) for binding in missing]
                return
        for binding in missing:
            replug = partial(self._wiring.ensure_port, binding, reopen=binding.port_id in stale)
            if _attempt(failed, binding.instance_uuid, replug):
                result.repaired.append(_replugged(binding))

    def _converge_packet_rates(self, result: ReconcileResult, failed: _Failures) -> None:
        """Re-apply every recorded packet-rate limit the switch no longer has in force.

        On OVS the limit is a meter and a flow on br-int, which ovn-controller deletes whenever it
        (re)connects to ovs-vswitchd, and which a re-plug leaves on the old ofport.
        """
        for binding in self._store.find(PortBinding, desired=PRESENT):
            if binding.qos_pps is None:
                continue
            try:
                if self._drivers.switch.packet_rate(binding.bridge, binding.port_name) == binding.qos_pps:
                    continue
            except DpustackError as exc:  # e.g. the port could not be plugged this pass: reported there too
                failed.setdefault(binding.instance_uuid, []).append(exc.message)
                continue
            if _attempt(failed, binding.instance_uuid, partial(self._wiring.apply_packet_rate, binding)):
                result.repaired.append(f"re-applied packet-rate limit {binding.qos_pps} pkt/s to port "
                                       f"{binding.port_id} ({binding.bridge}/{binding.port_name})")

    def _converge_volumes(self, result: ReconcileResult, failed: _Failures) -> None:
        observed = {(a.function_id, a.volume_id) for a in self._drivers.storage.list()}
        for binding in self._store.find(VolumeBinding, desired=PRESENT):
            if (binding.function_id, binding.volume_id) in observed:
                continue
            if _attempt(failed, binding.instance_uuid, partial(self._wiring.ensure_attachment, binding)):
                result.repaired.append(f"re-attached volume {binding.volume_id}")

    def _converge_domains(self, result: ReconcileResult, failed: _Failures, recreated: set[str]) -> None:
        """Define lost domains again; give net functions made again to their VMs again."""
        machine = self._runtime.machine
        for record in self._store.find(InstanceRecord):
            if (record.spec or {}).get(LEAVING):  # migrating live away: its domain goes with it
                continue
            if not self._runtime.defined(record.uuid):
                if _attempt(failed, record.uuid, partial(self._define_again, record)):
                    started = " and started it" if record.power == "on" else ""
                    result.repaired.append(f"defined {machine} {record.uuid} again{started}")
                continue
            for function in self._store.find(FunctionRecord, instance_uuid=record.uuid, kind="net", desired=PRESENT):
                if function.id in recreated and _attempt(failed, record.uuid,
                                                         partial(self._plug_again, record.uuid, function)):
                    result.repaired.append(f"plugged {function.id} into {machine} {record.uuid} again")

    def _define_again(self, record: InstanceRecord) -> None:
        """Define the instance from its record, with its recorded functions in the guest slots recorded, and start
        it if it was on."""
        spec = record.spec or {}
        request = BuildRequest.model_validate({"uuid": record.uuid, "name": record.name, "flavor": spec["flavor"],
                                               "networks": spec.get("networks", []),
                                               "pci_devices": spec.get("pci_devices", []),
                                               "numa_placement": spec.get("numa_placement")})
        self._runtime.define(request, instance_functions(self._store, record.uuid), slots=spec.get("slots"))
        if record.power == "on":
            self._runtime.power_on(record.uuid)

    def _plug_again(self, uuid: str, function: FunctionRecord) -> None:
        self._runtime.unplug(uuid, function.id)
        self._runtime.plug(uuid, instance_function(self._store, function))

    def _observe_instances(self, failed: _Failures) -> None:
        """Read each instance's power back (its OS may have shut down; a VM may have been paused or resumed on
        its host) and set or clear faults."""
        for record in self._store.find(InstanceRecord):
            power = self._runtime.power_state(record.uuid)
            errors = failed.get(record.uuid)
            fault = "; ".join(errors) if errors else None
            status = observed_status(power, fault, paused=self._runtime.paused(record.uuid))
            if (record.power, record.status, record.fault) != (power, status, fault):
                self._store.update(InstanceRecord, record.uuid, power=power, status=status, fault=fault)

    def _find_orphans(self) -> Orphans:
        known_functions = {f.id for f in self._store.find(FunctionRecord)}
        known_ports = {(b.bridge, b.port_name) for b in self._store.find(PortBinding)}
        known_volumes = {b.volume_id for b in self._store.find(VolumeBinding)}
        return Orphans(
            functions=tuple(f.id for f in self._drivers.functions.list() if f.id not in known_functions),
            # only ports carrying a cloud port id are ours to claim; patch and tunnel ports are not,
            # and metadata ports belong to the metadata proxy
            ports=tuple(f"{p.bridge}/{p.name}" for p in self._drivers.switch.list_ports()
                        if "iface-id" in p.external_ids and p.external_ids.get("dpustack:role") != "metadata"
                        and (p.bridge, p.name) not in known_ports),
            volumes=tuple(a.volume_id for a in self._drivers.storage.list() if a.volume_id not in known_volumes),
        )

    def _log(self, result: ReconcileResult) -> None:
        previous = self.last.orphans if self.last else Orphans()
        if result.orphans and result.orphans != previous:
            log.warning("reconcile pass %d: orphans left alone: %s", result.pass_id, result.orphans.as_dict())
        for error in result.errors:
            log.warning("reconcile pass %d: %s", result.pass_id, error)
        level = logging.INFO if result.repaired else logging.DEBUG
        log.log(level, "reconcile pass %d: %d repaired, %d error(s) in %d ms%s", result.pass_id,
                len(result.repaired), len(result.errors), result.duration_ms,
                "".join(f"\n  {item}" for item in result.repaired))


def _replugged(binding: PortBinding) -> str:
    return f"re-plugged port {binding.port_id} as {binding.bridge}/{binding.port_name}"


def _attempt(failed: _Failures, instance_uuid: str | None, action: Callable[[], object]) -> bool:
    """Run one repair; on a driver error note it against its instance and go on."""
    try:
        action()
    except DpustackError as exc:
        failed.setdefault(instance_uuid, []).append(exc.message)
        return False
    return True
