"""HypervisorDriver: the hypervisor of a VM node's host, driven from the DPU's agent.

It reads what the host offers: its NUMA cells with the CPUs and memory left
for instances once the host's reservation is taken out, its huge pages, and
what the host's running domains already use
(:class:`dpustack.contract.numa.NumaCell`); the rules are
:mod:`dpustack.drivers.hypervisor.topology`'s. And it runs the node's VMs'
domains, each keyed by its instance's UUID, which is the domain's UUID:
define (and define again, off), start, stop, reboot, pause, hot-plug, console, a user's password
through the guest's QEMU guest agent, undefine; and it live-migrates a running domain to another host's
hypervisor (:mod:`dpustack.drivers.hypervisor.migration`).
docs/vm.md tells both.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Collection
from typing import Annotated

from pydantic import AfterValidator

from dpustack.contract.numa import NumaCell
from dpustack.drivers.base import Driver
from dpustack.drivers.bmc import SerialConsole
from dpustack.drivers.hypervisor.domain_xml import FormName, LabBacking
from dpustack.drivers.hypervisor.migration import MIGRATION_TIMEOUT, MigrationProgress, MigrationResult, MigrationTarget
from dpustack.drivers.hypervisor.topology import parse_cpu_list


def _a_cpu_list(text: str) -> str:
    parse_cpu_list(text)  # a ValueError becomes the option's validation error
    return text


#: an option holding a CPU list as Nova's cpu_shared_set and libvirt's cpuset spell it ("0-3,8,^2"; "": none)
CpuList = Annotated[str, AfterValidator(_a_cpu_list)]


#: seconds a soft stop waits for the guest to power off, as Nova's shutdown_timeout
STOP_TIMEOUT = 60.0
#: seconds a detach waits for the guest to release the device
DETACH_TIMEOUT = 15.0
#: seconds between two presses of the power button in a soft stop, as Nova's shutdown_retry_interval
SHUTDOWN_RETRY = 10.0
#: seconds a guest agent command waits for the agent's answer (libvirt's own default is to wait for ever)
GUEST_AGENT_TIMEOUT = 10


class DomainState(enum.StrEnum):
    """What a domain is doing, as the hypervisor says."""

    RUNNING = "running"
    PAUSED = "paused"  # QEMU runs, the vCPUs do not
    OFF = "off"  # defined, no QEMU
    MISSING = "missing"  # no domain with that UUID


class HypervisorDriver(Driver):
    """The host's hypervisor: can it be reached, the NUMA cells it offers to instances, and the domains of
    the node's instances, by UUID.

    A UUID that is not one is an InvalidInput naming ``uuid``; an operation on a domain that is missing is a
    DriverError, but for :meth:`state` (``missing``), :meth:`define` and :meth:`undefine`.
    """

    interface = "hypervisor"
    #: the form of domain XML the host takes (:mod:`dpustack.drivers.hypervisor.domain_xml`): ``production``
    #: passes the DPU's functions through by BDF; a lab host has other devices stand for them
    form: FormName = "production"
    #: the URI another host's hypervisor reaches this one at for a live migration to it (the node's agent
    #: hands it to the source, through the controller)
    migration_uri: str = ""

    def lab_backing(self) -> LabBacking | None:
        """What stands for each DPU function in a lab host's guests; None where they are passed through."""
        return None

    @abc.abstractmethod
    def validate(self) -> None:
        """Check cheaply that the hypervisor answers; DriverError naming where it was looked for."""

    @abc.abstractmethod
    def topology(self, ignore: Collection[str] = ()) -> list[NumaCell]:
        """The host's cells, by id: CPUs and memory offered to instances (the reserved ones left out), huge
        pages per size, and what the host's running domains use, but for the domains whose UUIDs are in
        ``ignore`` (the node's own instances, which the controller's claims already count). DriverError
        if the host cannot be read or the reservation does not fit it."""

    # ------------------------------------------------------------ domains
    @abc.abstractmethod
    def define(self, uuid: str, xml: str) -> None:
        """Define domain ``uuid`` (persistent, off) from ``xml``, whose ``<uuid>`` is ``uuid``. The same XML again
        is nothing to do (even once hot-plugs changed the definition); a domain with that UUID defined from
        other XML (or by someone else) is a DriverError."""

    @abc.abstractmethod
    def redefine(self, uuid: str, xml: str) -> None:
        """Replace the definition of the off domain ``uuid``, which this driver defined, with ``xml`` (the same
        UUID and name: a resize's new vCPUs and memory), keeping what the host holds for the domain (its NVRAM,
        its console). The same XML again is nothing to do; a domain that is missing, not off, named otherwise
        or defined by someone else is a DriverError."""

    @abc.abstractmethod
    def start(self, uuid: str) -> None:
        """Power the domain on; returns once QEMU runs. Running or paused already: nothing to do."""

    @abc.abstractmethod
    def stop(self, uuid: str, soft: bool = True, timeout: float = STOP_TIMEOUT) -> None:
        """Power the domain off; off already: nothing to do. ``soft``: press the ACPI power button and wait
        until the guest has powered off, pressing again every :data:`SHUTDOWN_RETRY` s, DriverError after
        ``timeout`` s (the domain runs on); a paused guest cannot hear it, a DriverError. Hard: destroy it,
        returns once QEMU has exited."""

    @abc.abstractmethod
    def reboot(self, uuid: str, soft: bool = True) -> None:
        """Restart the guest. ``soft``: the ACPI power button, and when the guest has powered off the domain
        is reset instead of stopped (returns once asked; DriverError if off or paused). Hard: reset, and
        resume if paused; an off domain is started."""

    @abc.abstractmethod
    def pause(self, uuid: str) -> None:
        """Stop the vCPUs (QEMU and the guest's memory stay); paused already: nothing to do; off: DriverError."""

    @abc.abstractmethod
    def unpause(self, uuid: str) -> None:
        """Run the vCPUs again; running already: nothing to do; off: DriverError."""

    @abc.abstractmethod
    def state(self, uuid: str) -> DomainState:
        """What the domain is doing; ``missing`` if the host has no domain ``uuid``."""

    @abc.abstractmethod
    def undefine(self, uuid: str) -> None:
        """Destroy the domain if it runs and forget it with its managed save image and NVRAM; missing
        already: nothing to do."""

    @abc.abstractmethod
    def attach(self, uuid: str, device_xml: str, alias: str) -> None:
        """Add the device ``device_xml`` (user alias ``ua-<alias>``, added if it has none) to the running
        domain and its definition, or to the definition only when off. A device ``alias`` the domain has
        already: nothing to do if it is that device (kind, guest address, MAC, source), else DriverError."""

    @abc.abstractmethod
    def detach(self, uuid: str, alias: str, timeout: float = DETACH_TIMEOUT) -> None:
        """Remove device ``alias`` from the running domain and its definition (from the definition only when
        off); returns once the guest has released it, DriverError after ``timeout`` s (it is gone from the
        definition then). A device the domain does not have: nothing to do."""

    @abc.abstractmethod
    def device_addresses(self, uuid: str) -> dict[str, tuple[int, int, int, int]]:
        """The guest PCI address (domain, bus, slot, function) of each device of the domain's definition that
        has a user alias, by alias (without ``ua-``)."""

    @abc.abstractmethod
    def serial_console(self, uuid: str) -> SerialConsole:
        """A new, detached stream of the domain's serial console (ttyS0), which follows it through its
        restarts."""

    @abc.abstractmethod
    def set_password(self, uuid: str, user: str, password: str) -> None:
        """Set ``user``'s password in the running guest, through its QEMU guest agent (qemu-ga's
        ``guest-set-user-password``). DriverError, with the hypervisor's reason, when the domain is missing,
        off or paused, or its guest agent does not answer within :data:`GUEST_AGENT_TIMEOUT` s or fails (no
        such user). The password is in no message and no log."""

    @abc.abstractmethod
    def domains(self) -> list[str]:
        """The UUIDs of the domains this driver defined (:meth:`define`) and the host still has, sorted; the
        host's other domains are left out."""

    # ------------------------------------------------------------ live migration
    @abc.abstractmethod
    def migrate_live(self, uuid: str, target: MigrationTarget, *, timeout: float = MIGRATION_TIMEOUT,
                     bandwidth_mib: int | None = None) -> MigrationResult:
        """Move the running (or paused) domain ``uuid``, its memory and state, to the hypervisor at
        ``target.uri`` while the guest runs on; returns once the guest runs there. On the target the domain
        is ``target.xml`` (same UUID and name, this driver's mark on it), persistent; here it is gone. The
        stream is capped at ``bandwidth_mib`` MiB/s if given. A migration not done after ``timeout`` s is
        aborted. DriverError with the hypervisor's reason when it fails, is aborted (:meth:`abort_migration`)
        or times out: the domain then runs on here as it was, and the target has none."""

    @abc.abstractmethod
    def migration_progress(self, uuid: str) -> MigrationProgress | None:
        """The outgoing live migration of domain ``uuid`` in progress, None if there is none; callable from
        another thread while :meth:`migrate_live` runs."""

    @abc.abstractmethod
    def runs_at(self, uri: str, uuid: str) -> bool:
        """Whether domain ``uuid`` runs (or is paused) at the hypervisor at ``uri``, as this host's reaches
        it: after a migration there whose caller went away, whether it arrived. DriverError if that
        hypervisor cannot be asked."""

    @abc.abstractmethod
    def abort_migration(self, uuid: str) -> None:
        """Abort the outgoing live migration of domain ``uuid`` (from another thread): :meth:`migrate_live`
        fails and the domain runs on here. DriverError if no migration of it is in progress."""
