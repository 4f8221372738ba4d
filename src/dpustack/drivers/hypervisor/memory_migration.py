"""Live migration between two in-memory hypervisors of one process (mixed into
:class:`~dpustack.drivers.hypervisor.memory.MemoryHypervisorDriver`).

Each pretend host is reachable at its ``uri``, ``memory:///<host>``, while it exists (the last one made of a name).
A migration checks what libvirt checks (the domain runs, the target is another host that has no domain
with that UUID, the XML is of that domain, the running guest has no PCI hostdev, and its devices are the
target XML's: same ids, kinds and guest addresses), then takes :attr:`~MemoryMigration.migration_seconds`
(0 by default), during which :meth:`migration_progress` counts the guest's memory across and
:meth:`abort_migration` stops it. Then the domain is the target's, defined from the target XML, with the
same guest (state, boots, users, console), and gone from here; the downtime is 0.
"""

from __future__ import annotations

import threading
import time
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.hypervisor.definition import aliases, definition, guest_address
from dpustack.drivers.hypervisor.migration import (MIGRATION_TIMEOUT, MigrationProgress, MigrationResult,
                                                   MigrationTarget)
from dpustack.errors import DriverError, InvalidInput


SCHEME = "memory:///"
_HOSTS: weakref.WeakValueDictionary[str, "MemoryMigration"] = weakref.WeakValueDictionary()
_RUNS = (DomainState.RUNNING, DomainState.PAUSED)
_MiB = 1 << 20


@dataclass
class _Job:
    """An outgoing migration: when it began, how long it takes, the bytes to send, whether it was aborted."""

    started: float
    seconds: float
    total: int
    aborted: threading.Event = field(default_factory=threading.Event)

    def processed(self) -> int:
        if self.seconds <= 0:
            return self.total
        return min(self.total, int(self.total * (time.monotonic() - self.started) / self.seconds))


class MemoryMigration:
    """A pretend host's live migrations to another pretend host; mixed into the memory driver, whose domains,
    lock and faults it uses."""

    uri: str
    migration_uri: str
    held: dict[str, Any]  # the driver's MemoryDomain records, by UUID
    faults: FaultInjector
    _lock: threading.RLock
    _held: Callable[[str], Any]
    _key: Callable[[str], str]

    #: how long a migration takes (s); a test sets it to abort one, or to let it time out
    migration_seconds: float = 0.0

    def _register(self, host: str) -> None:
        self.uri = self.migration_uri = SCHEME + host
        _HOSTS[self.uri] = self  # a later host of that name is the one reached
        self._jobs: dict[str, _Job] = {}

    def migrate_live(self, uuid: str, target: MigrationTarget, *,
                     timeout: float = MIGRATION_TIMEOUT, bandwidth_mib: int | None = None) -> MigrationResult:
        with self.faults.guard("migrate_live"):
            wanted = definition(uuid, target.xml)
            if timeout <= 0:
                raise InvalidInput(f"timeout: more than 0 s, not {timeout:g}", field="timeout")
            if bandwidth_mib is not None and bandwidth_mib < 1:
                raise InvalidInput(f"bandwidth_mib: 1 or more, not {bandwidth_mib}", field="bandwidth_mib")
            started = time.monotonic()
            with self._lock:
                held = self._held(uuid)
                label = f"domain {wanted.uuid} ('{held.name}')"
                if wanted.uuid in self._jobs:
                    raise DriverError(f"{label} is migrating already")
                there = self._target(target.uri, wanted.uuid, label)
                if held.state not in _RUNS:
                    raise DriverError(f"{label} is {held.state}: only a running domain migrates live")
                if wanted.name != held.name:
                    raise InvalidInput(f"xml: the target's domain is '{wanted.name}', {label} is not", field="xml")
                _check_devices(held.live, aliases(ET.fromstring(wanted.xml)), label, target.uri)
                job = self._jobs[wanted.uuid] = _Job(started, self.migration_seconds, _memory_bytes(held.xml))
            try:
                if job.aborted.wait(min(job.seconds, timeout)) or job.seconds > timeout:
                    when = "" if job.aborted.is_set() else f" within {timeout:g} s (aborted)"
                    raise DriverError(f"cannot migrate {label} live to {target.uri}{when}: operation aborted: "
                                      "migration out: canceled by client")
                first, second = sorted((self, there), key=id)  # one order: two hosts migrating to each other
                with first._lock, second._lock:
                    if job.aborted.is_set():
                        raise DriverError(f"cannot migrate {label} live to {target.uri}: operation aborted: "
                                          "migration out: canceled by client")
                    devices = aliases(ET.fromstring(wanted.xml))
                    there.held[wanted.uuid] = replace(self.held.pop(wanted.uuid), digest=wanted.digest,
                                                      xml=wanted.xml, config=devices, live=dict(devices))
            finally:
                with self._lock:
                    self._jobs.pop(wanted.uuid, None)
            return MigrationResult(duration_s=time.monotonic() - started, downtime_ms=0, data_total=job.total)

    def migration_progress(self, uuid: str) -> MigrationProgress | None:
        with self.faults.guard("migration_progress"), self._lock:
            key = self._key(uuid)
            self._held(uuid)
            job = self._jobs.get(key)
            if job is None:
                return None
            processed = job.processed()
            return MigrationProgress(data_total=job.total, data_processed=processed,
                                     data_remaining=job.total - processed,
                                     elapsed_ms=int((time.monotonic() - job.started) * 1000))

    def runs_at(self, uri: str, uuid: str) -> bool:
        with self.faults.guard("runs_at"):
            there = _HOSTS.get(uri)
            if there is None:
                raise DriverError(f"cannot connect to the hypervisor at {uri}")
            with there._lock:
                held = there.held.get(there._key(uuid))
                return held is not None and held.state in _RUNS

    def abort_migration(self, uuid: str) -> None:
        with self.faults.guard("abort_migration"), self._lock:
            key = self._key(uuid)
            held = self._held(uuid)
            job = self._jobs.get(key)
            if job is None:
                raise DriverError(f"no live migration of domain {key} ('{held.name}') is in progress")
            job.aborted.set()

    def _target(self, uri: str, uuid: str, label: str) -> "MemoryMigration":
        there = _HOSTS.get(uri)
        if there is None:
            raise DriverError(f"cannot migrate {label} live to {uri}: cannot connect to the hypervisor there")
        if there is self:
            raise DriverError(f"cannot migrate {label} live to {uri}: attempt to migrate guest to the same host")
        if uuid in there.held:
            raise DriverError(f"cannot migrate {label} live to {uri}: the target has a domain {uuid} already")
        return there


def _check_devices(live: dict[str, ET.Element], theirs: dict[str, ET.Element], label: str, uri: str) -> None:
    """libvirt's refusals: a hostdev cannot move; the target's devices must be the running guest's."""
    passed = sorted(alias for alias, element in live.items()
                    if element.tag == "hostdev" or (element.tag == "interface" and element.get("type") == "hostdev"))
    if passed:
        raise DriverError(f"cannot migrate {label} live to {uri}: Requested operation is not valid: domain has "
                          f"assigned non-USB host devices ({', '.join(passed)})")
    ours = {alias: (element.tag, guest_address(element)) for alias, element in live.items()}
    wanted = {alias: (element.tag, guest_address(element)) for alias, element in theirs.items()}
    if ours != wanted:
        differ = sorted(set(ours) ^ set(wanted) | {alias for alias in set(ours) & set(wanted)
                                                    if ours[alias] != wanted[alias]})
        raise DriverError(f"cannot migrate {label} live to {uri}: unsupported configuration: the target's devices "
                          f"do not match the running guest's ({', '.join(differ)})")


def _memory_bytes(xml: str) -> int:
    """The domain's ``<memory>`` in bytes (MiB or KiB as the XML gives it)."""
    memory = ET.fromstring(xml).find("memory")
    if memory is None or not (memory.text or "").strip().isdigit():
        return 0
    unit = (memory.get("unit") or "KiB").lower()
    return int(memory.text) * (_MiB if unit in ("m", "mib") else 1 << 30 if unit in ("g", "gib") else 1024)
