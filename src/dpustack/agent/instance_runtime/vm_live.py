"""The pieces of a VM's live migration that run on each node (mixed into :class:`VmRuntime`).

A live migration moves a running domain's memory and state to the target host's hypervisor
(:meth:`HypervisorDriver.migrate_live <dpustack.drivers.hypervisor.HypervisorDriver.migrate_live>`). What is
passed through by BDF cannot go with it: a net function's VF is a device of the source host. So, as clouds
do for SR-IOV ports:

1. source, :meth:`~LiveMigration.prepare_live_migration`: the net functions are unplugged from the guest
   (it lets go of them, as of any hot-unplugged NIC); the storage functions stay, the guest's disks keep
   working; the guest slot of every device is returned, for the target;
2. target: the DPU exports the instance's volumes too (two exports of one volume while it moves) and
   creates the net functions; :meth:`~LiveMigration.incoming_xml` is the domain as this host runs it, its
   storage functions in the slots the source has them, without the net functions;
3. source, :meth:`~LiveMigration.migrate_live` with that XML (abort and progress from another thread);
4. target, :meth:`~LiveMigration.receive_live_migration`: defines nothing (the domain came with the
   migration, defined by it) and plugs the net functions in, each into the slot it had on the source.
   A migration that failed or was aborted leaves the domain on the source:
   :meth:`~LiveMigration.restore_after_live_migration` plugs its net functions back there.

The guest has no network from 1 to 4; docs/vm.md ("Live migration") tells why, and the alternative (vDPA).
PCI devices (a PCI flavor's, a remote-managed NIC's VF) cannot be unplugged under a guest that uses them:
a domain with any is refused before anything changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from typing import Callable

from dpustack.agent.instance_runtime.base import InstanceFunction
from dpustack.contract.instances import BuildRequest
from dpustack.drivers.hypervisor import DomainState, HypervisorDriver, domain_xml
from dpustack.drivers.hypervisor.domain_xml import PassedFunction
from dpustack.drivers.hypervisor.migration import MIGRATION_TIMEOUT, MigrationProgress, MigrationResult, MigrationTarget
from dpustack.errors import Conflict, DriverError, InvalidInput


#: the aliases VmRuntime gives PCI devices (``pci<N>``) and remote-managed NICs' VFs (``vf-<port>``)
_PCI_DEVICE = re.compile(r"^(pci\d+|vf-.+)$")
_RUNS = (DomainState.RUNNING, DomainState.PAUSED)


class LiveMigration:
    """A VM node's side of a live migration, source or target; mixed into the runtime, whose hypervisor,
    domain XML, functions and slots it uses."""

    _hypervisor: HypervisorDriver
    _xml: Callable[[BuildRequest, list[InstanceFunction], Mapping[str, int]], str]
    _passed: Callable[[InstanceFunction, int, int | None], PassedFunction]
    layout: Callable[[str], dict[str, int]]

    @property
    def migration_uri(self) -> str:
        """Where the other hosts' hypervisors reach this one for a live migration here (the driver's)."""
        return self._hypervisor.migration_uri

    # -- source --------------------------------------------------------------
    def prepare_live_migration(self, uuid: str, net_function_ids: Collection[str]) -> dict[str, int]:
        """Unplug the net functions ``net_function_ids`` from the running instance (each returns once the
        guest let go; one it does not have is nothing to do), its storage kept. Returns the guest slot of
        every device the domain held before, by id, for the target. DriverError unless it runs here;
        Conflict, before anything changes, if it has PCI devices (they cannot move)."""
        self._running_here(uuid)
        slots = self.layout(uuid)
        devices = sorted(alias for alias in slots if _PCI_DEVICE.match(alias))
        if devices:
            raise Conflict(f"instance {uuid} has PCI devices passed through ({', '.join(devices)}): they cannot "
                           "be unplugged under its guest nor move with its memory; migrate it cold",
                           field="pci_devices")
        for function_id in net_function_ids:
            self._hypervisor.detach(uuid, function_id)
        return slots

    def migrate_live(self, uuid: str, target: MigrationTarget, *, timeout: float = MIGRATION_TIMEOUT,
                     bandwidth_mib: int | None = None) -> MigrationResult:
        """Move the running instance to the target host's hypervisor (the hypervisor's ``migrate_live``)."""
        return self._hypervisor.migrate_live(uuid, target, timeout=timeout, bandwidth_mib=bandwidth_mib)

    def left_for(self, uuid: str, uri: str) -> bool:
        """Whether the instance's migration to the hypervisor at ``uri`` is done: its domain is gone from
        here and runs there (DriverError if that hypervisor cannot be asked)."""
        return self._hypervisor.state(uuid) == DomainState.MISSING and self._hypervisor.runs_at(uri, uuid)

    def wait_outgoing(self, uuid: str, timeout: float) -> None:
        """Wait for the end of the instance's outgoing migration in progress, if one is (one this agent did
        not start: it restarted meanwhile, the hypervisor went on); DriverError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self._hypervisor.state(uuid) != DomainState.MISSING:
            try:
                if self._hypervisor.migration_progress(uuid) is None:
                    return
            except DriverError:
                if self._hypervisor.state(uuid) == DomainState.MISSING:
                    return  # it left meanwhile
                raise
            if time.monotonic() > deadline:
                raise DriverError(f"the live migration of instance {uuid} in progress did not end within "
                                  f"{timeout:g} s")
            time.sleep(0.1)

    def live_migration_progress(self, uuid: str) -> MigrationProgress | None:
        """The instance's outgoing live migration, None if none is in progress."""
        return self._hypervisor.migration_progress(uuid)

    def abort_live_migration(self, uuid: str) -> None:
        """Abort the instance's outgoing live migration: it runs on here (DriverError if none runs)."""
        self._hypervisor.abort_migration(uuid)

    def restore_after_live_migration(self, uuid: str, functions: list[InstanceFunction],
                                     slots: Mapping[str, int]) -> None:
        """After a failed or aborted migration, on the source: plug the net functions back, each into its
        slot of ``slots``."""
        self._plug_all(uuid, functions, slots)

    # -- target --------------------------------------------------------------
    def incoming_xml(self, request: BuildRequest, functions: list[InstanceFunction],
                     slots: Mapping[str, int]) -> str:
        """The domain of ``request`` (this host's placement) as this host runs it once it arrived: its storage
        ``functions`` (this DPU's) each in its slot of ``slots`` (the source's), no net function (plugged by
        :meth:`receive_live_migration`). InvalidInput for a net function; Conflict for PCI devices."""
        nets = [function.id for function in functions if function.kind == "net"]
        if nets:
            raise InvalidInput(f"functions: {', '.join(nets)} are net functions: they are plugged after the "
                               "switch-over, not migrated", field="functions")
        if request.pci_devices or any(nic.vf is not None for nic in request.networks):
            raise Conflict(f"instance {request.uuid} has PCI devices passed through: they cannot move with its "
                           "memory; migrate it cold", field="pci_devices")
        missing = [function.id for function in functions if function.id not in slots]
        if missing:
            raise InvalidInput(f"slots: no slot for {', '.join(missing)} (the source's slots of its devices)",
                               field="slots")
        return self._xml(request, functions, slots)

    def receive_live_migration(self, uuid: str, functions: list[InstanceFunction],
                               slots: Mapping[str, int]) -> None:
        """After the switch-over, on the target: the instance runs here (DriverError if it did not arrive);
        plug its net ``functions`` in, each into its slot of ``slots`` (else the lowest one free), so the
        guest finds each NIC where it was, with its MAC. Plugged already: nothing to do."""
        self._plug_all(uuid, functions, slots)

    # -- helpers -------------------------------------------------------------
    def _running_here(self, uuid: str) -> None:
        state = self._hypervisor.state(uuid)
        if state not in _RUNS:
            raise DriverError(f"instance {uuid} does not run on this host (its domain is {state})", field="uuid")

    def _plug_all(self, uuid: str, functions: list[InstanceFunction], slots: Mapping[str, int]) -> None:
        self._running_here(uuid)
        for function in functions:
            held = self.layout(uuid)
            slot = held.get(function.id, slots.get(function.id))
            taken = {there: alias for alias, there in held.items() if alias != function.id}
            if slot is None or slot in taken:
                slot = next((n for n in range(domain_xml.ROOT_PORTS) if n not in taken), None)
                if slot is None:
                    raise DriverError(f"instance {uuid} has no free slot for {function.id}", field="slot")
            element = domain_xml.function_element(self._passed(function, slot, None), self._hypervisor.form,
                                                  self._hypervisor.lab_backing())
            self._hypervisor.attach(uuid, domain_xml.to_string(element), function.id)
