"""Live migration of :class:`~dpustack.drivers.hypervisor.libvirt.LibvirtHypervisorDriver`'s domains.

``migrate_live`` is libvirt's peer-to-peer migration (``virDomainMigrateToURI3``): the source's libvirtd
connects to the target's at ``target.uri`` and drives the whole move, so an agent that goes away meanwhile
does not leave it half done. The flags are :data:`FLAGS`:

* ``LIVE``: the guest runs while its memory is copied, and is paused only for the last round;
* ``PERSIST_DEST`` with ``persistent_xml``, and ``destination_xml``: the target runs and keeps the
  domain as ``target.xml`` marked by :func:`~dpustack.drivers.hypervisor.definition.definition` (its own
  storage sockets and taps, the target driver's mark); libvirt checks it is the same machine (ABI) as the
  source's running one, so devices the source unplugged before must be missing from it too;
* ``UNDEFINE_SOURCE``: the source's definition goes with the switch-over.

No ``UNSAFE``: libvirt's check of the disks stands (a vhost-user-blk disk is not local storage to it, and
passes).

Progress is the source's job statistics (``virDomainGetJobStats``); abort is ``virDomainAbortJob``, both on
a connection of their own, so another thread may call them while ``migrate_live`` waits. The timeout is a
timer that aborts. The downtime is the completed job's statistics, which libvirt hands to the target with
the domain; the driver reads them there (``target.uri``), and says None when it cannot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt

from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.hypervisor.definition import definition, domain_uuid
from dpustack.drivers.hypervisor.libvirt_domains import LibvirtDomains
from dpustack.drivers.hypervisor.migration import (MIGRATION_TIMEOUT, MigrationProgress, MigrationResult,
                                                   MigrationTarget)
from dpustack.errors import DriverError, InvalidInput
from dpustack.libvirt_host import failing, lookup, opened

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
_RUNS = (DomainState.RUNNING, DomainState.PAUSED)


class LibvirtMigration(LibvirtDomains):
    """The domains of the libvirtd at ``uri``, and their live migration (mixed into the libvirt hypervisor
    driver)."""

    def migrate_live(self, uuid: str, target: MigrationTarget, *, timeout: float = MIGRATION_TIMEOUT,
                     bandwidth_mib: int | None = None) -> MigrationResult:
        wanted = definition(uuid, target.xml)
        if timeout <= 0:
            raise InvalidInput(f"timeout: more than 0 s, not {timeout:g}", field="timeout")
        if bandwidth_mib is not None and bandwidth_mib < 1:
            raise InvalidInput(f"bandwidth_mib: 1 or more, not {bandwidth_mib}", field="bandwidth_mib")
        params: dict[str, object] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: wanted.xml,
                                     libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: wanted.xml}
        if target.migration_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = target.migration_uri
        if bandwidth_mib is not None:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib
        with self._domain(uuid) as (domain, label):
            state = self.state(uuid)
            if state not in _RUNS:
                raise DriverError(f"{label} is {state}: only a running domain migrates live")
            if domain.name() != wanted.name:
                raise InvalidInput(f"xml: the target's domain is '{wanted.name}', {label} is not", field="xml")
            timer = _Watchdog(timeout, lambda: self._abort_quietly(wanted.uuid))
            started = time.monotonic()
            timer.start()
            try:
                domain.migrateToURI3(target.uri, params, FLAGS)
            except libvirt.libvirtError as exc:
                reason = exc.get_error_message() or str(exc)
                when = f" within {timeout:g} s (aborted)" if timer.fired else ""
                raise DriverError(f"cannot migrate {label} live to {target.uri}{when}: {reason}") from exc
            finally:
                timer.cancel()
            duration = time.monotonic() - started
        stats = _completed_stats(target.uri, wanted.uuid)
        return MigrationResult(duration_s=duration, downtime_ms=_int(stats.get(libvirt.VIR_DOMAIN_JOB_DOWNTIME)),
                               data_total=_int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_TOTAL)))

    def migration_progress(self, uuid: str) -> MigrationProgress | None:
        with self._domain(uuid) as (domain, label):
            stats = _outgoing_job(domain, label)
            if stats is None:
                return None
            return MigrationProgress(
                data_total=_int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_TOTAL)) or 0,
                data_processed=_int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED)) or 0,
                data_remaining=_int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_REMAINING)) or 0,
                elapsed_ms=_int(stats.get(libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED)) or 0)

    def runs_at(self, uri: str, uuid: str) -> bool:
        with opened(uri, f"cannot connect to the hypervisor at {uri}") as connection:
            domain = lookup(connection, domain_uuid(uuid), by_uuid=True)
            if domain is None:
                return False
            with failing(f"cannot read the state of domain {uuid} at {uri}"):
                state = domain.state()[0]
            return state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED)

    def abort_migration(self, uuid: str) -> None:
        with self._domain(uuid) as (domain, label):
            if _outgoing_job(domain, label) is None:
                raise DriverError(f"no live migration of {label} is in progress")
            with failing(f"cannot abort the live migration of {label}"):
                domain.abortJob()

    # ----------------------------------------------------------- internals
    def _abort_quietly(self, uuid: str) -> None:
        """The timeout's abort: a migration that ended meanwhile is fine."""
        try:
            self.abort_migration(uuid)
        except DriverError:
            pass


def _outgoing_job(domain: libvirt.virDomain, label: str) -> dict[str, object] | None:
    """The statistics of the domain's outgoing migration, None if it has none running."""
    with failing(f"cannot read the job of {label}"):
        stats = domain.jobStats(0)
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED):
        return None
    if stats.get(libvirt.VIR_DOMAIN_JOB_OPERATION) != libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
        return None
    return stats


def _completed_stats(uri: str, uuid: str) -> dict[str, object]:
    """The completed migration job's statistics as the target holds them; empty if it cannot be asked."""
    try:
        with opened(uri, f"cannot connect to the hypervisor at {uri}") as connection:
            domain = lookup(connection, domain_uuid(uuid), by_uuid=True)
            return domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED) if domain is not None else {}
    except (DriverError, libvirt.libvirtError):
        return {}


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


class _Watchdog:
    """Calls ``action`` once after ``seconds`` unless cancelled first; says whether it did."""

    def __init__(self, seconds: float, action: Callable[[], None]):
        self.fired = False
        self._action = action
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        self._action()

