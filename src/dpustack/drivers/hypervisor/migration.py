"""What a live migration of a domain to another host's hypervisor is given and gives back.

    result = source.migrate_live(uuid, MigrationTarget(uri="qemu+tls://host-2/system", xml=target_xml))
    result.duration_s, result.downtime_ms        # the whole move, and the guest's pause at the switch-over

``xml`` is the domain as the target host runs it: its own storage sockets (or functions) and taps, the
target's NUMA placement; the source's driver marks it as :mod:`dpustack.drivers.hypervisor.definition` does,
so on the target the domain counts as its driver's own (``domains()``) and ``define`` of the same XML is
nothing to do. docs/vm.md ("Live migration") tells the whole of it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: seconds a live migration may take before it is aborted (the domain then runs on where it was)
MIGRATION_TIMEOUT = 300.0


@dataclass(frozen=True)
class MigrationTarget:
    """Where a domain migrates to: the target host's hypervisor as the source's hypervisor reaches it (a
    libvirt URI, ``qemu+tls://host-2/system``), the domain's XML there, and where QEMU's migration stream
    goes (``tcp://ADDRESS[:PORT]``; None: where the target's hypervisor says, from its host name)."""

    uri: str
    xml: str
    migration_uri: str | None = None


@dataclass(frozen=True)
class MigrationProgress:
    """A migration in progress, as the source's hypervisor counts it (bytes; ms since it began)."""

    data_total: int
    data_processed: int
    data_remaining: int
    elapsed_ms: int


@dataclass(frozen=True)
class MigrationResult:
    """A finished live migration: how long the call took (s, measured by the driver; None when nobody
    waited for its end: the caller went away), how long the guest was paused for the switch-over (ms, the
    hypervisor's measure; None if the target did not say) and the bytes sent."""

    duration_s: float | None
    downtime_ms: int | None
    data_total: int | None
