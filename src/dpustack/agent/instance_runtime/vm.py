"""VmRuntime: each instance is a domain of the host's hypervisor, its UUID the instance's.

The domain is defined from the build request (vCPUs, memory, the NUMA placement the controller claimed,
the PCI devices it allocated) and the instance's DPU functions, passed through by the BDF the function
driver returned, in the form of the hypervisor (:mod:`dpustack.drivers.hypervisor.domain_xml`: hostdevs in
production, what stands for them on a lab host). Functions are in guest slots: at define, in the order given
(volumes first), then the VFs of remote-managed NICs (each with its port's MAC), then the other PCI devices; a
function plugged later takes the lowest slot the domain's definition leaves free, and a function it holds
already keeps its slot, so plugging again is nothing to do. A resize defines the off domain again with the new
vCPUs, memory and placement, every function and device kept in its slot.

Power is the domain's: stop presses the power button and waits for the guest (``stop_timeout`` seconds),
then pulls the plug; a paused domain counts as on. Pause and unpause are the hypervisor's (the vCPUs stop,
QEMU and the guest's memory stay). A paused domain is resumed to be stopped, so that its OS shuts down as a
running one does, and resumed by a start (a start makes the instance run). A user's password is set in the
running guest through its QEMU guest agent (the hypervisor's ``set_password``). The node's side of a live
migration is :mod:`dpustack.agent.instance_runtime.vm_live`'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Set

from dpustack.agent.instance_runtime.base import InstanceFunction, InstanceRuntime
from dpustack.agent.instance_runtime.vm_live import LiveMigration
from dpustack.contract.instances import BuildRequest
from dpustack.drivers.bmc import Console, RebootKind, SerialConsole
from dpustack.drivers.hypervisor import STOP_TIMEOUT, DomainState, HypervisorDriver
from dpustack.drivers.hypervisor import domain_xml
from dpustack.drivers.hypervisor.domain_xml import DomainSpec, PassedDevice, PassedFunction
from dpustack.errors import DriverError
from dpustack.instance_states import PowerState

#: the libvirt domain name of an instance
NAME_PREFIX = "dpustack-"


class VmRuntime(LiveMigration, InstanceRuntime):
    """The node's instances as domains of ``hypervisor``; any number of them (the scheduler's claims decide)."""

    machine = "VM"
    passes_functions = True
    resizable = True

    def __init__(self, hypervisor: HypervisorDriver, *, stop_timeout: float = STOP_TIMEOUT):
        self._hypervisor = hypervisor
        self._stop_timeout = stop_timeout

    def check_room(self, uuid: str, hosted: Set[str]) -> None:
        """Nothing to check here: the controller claimed the instance's cells, CPUs and memory."""

    # -- the domain --------------------------------------------------------
    def define(self, request: BuildRequest, functions: list[InstanceFunction],
               slots: Mapping[str, int] | None = None) -> None:
        self._hypervisor.define(request.uuid, self._xml(request, functions, slots or {}))

    def layout(self, uuid: str) -> dict[str, int]:
        slots = {alias: domain_xml.slot_at(address)
                 for alias, address in self._hypervisor.device_addresses(uuid).items()}
        return {alias: slot for alias, slot in slots.items() if slot is not None}

    def redefine(self, request: BuildRequest, functions: list[InstanceFunction]) -> None:
        """The off domain defined again from ``request`` (a resize's flavor and placement), each function and PCI
        device in the guest slot the domain's definition has it in (so the guest sees the same devices at the
        same addresses, its NICs with the same MACs)."""
        self._hypervisor.redefine(request.uuid, self._xml(request, functions, self.layout(request.uuid)))

    def _xml(self, request: BuildRequest, functions: list[InstanceFunction],
             taken: Mapping[str, int | None]) -> str:
        """The domain of ``request`` with ``functions`` then its PCI devices, each in its slot of ``taken`` (by
        alias) or else the lowest one free, in the order given; boot order by that order too."""
        used = {slot for slot in taken.values() if slot is not None}

        def slot_of(alias: str) -> int:
            slot = taken.get(alias)
            if slot is None:
                slot = next(n for n in itertools.count() if n not in used)  # check() refuses too many
                used.add(slot)
            return slot

        boot = iter(range(1, len(functions) + 1))
        passed = [self._passed(function, slot_of(function.id), next(boot) if function.bootable else None)
                  for function in functions]
        vfs = [PassedDevice(id=f"vf-{nic.port_id}", host_bdf=nic.vf.address, slot=slot_of(f"vf-{nic.port_id}"),
                            mac=nic.mac)
               for nic in request.networks if nic.vf is not None]
        vf_addresses = {vf.host_bdf for vf in vfs}
        others = [PassedDevice(id=f"pci{index}", host_bdf=device.address, slot=slot_of(f"pci{index}"))
                  for index, device in enumerate(request.pci_devices) if device.address not in vf_addresses]
        devices = vfs + others
        spec = DomainSpec(name=NAME_PREFIX + request.uuid, uuid=request.uuid, vcpus=request.flavor.vcpus,
                          memory_mib=request.flavor.ram, placement=request.numa_placement, functions=passed,
                          devices=devices)
        return domain_xml.assemble(spec, self._hypervisor.form, self._hypervisor.lab_backing())

    def defined(self, uuid: str) -> bool:
        return self._hypervisor.state(uuid) != DomainState.MISSING

    def undefine(self, uuid: str) -> None:
        self._hypervisor.undefine(uuid)

    def plug(self, uuid: str, function: InstanceFunction) -> None:
        taken = self.layout(uuid)
        slot = taken.get(function.id)
        if slot is None:
            used = set(taken.values())
            slot = next((n for n in range(domain_xml.ROOT_PORTS) if n not in used), None)
            if slot is None:
                raise DriverError(f"instance {uuid} has no free slot for {function.id}: all "
                                  f"{domain_xml.ROOT_PORTS} are taken", field="slot")
        element = domain_xml.function_element(self._passed(function, slot, None), self._hypervisor.form,
                                              self._hypervisor.lab_backing())
        self._hypervisor.attach(uuid, domain_xml.to_string(element), function.id)

    def unplug(self, uuid: str, function_id: str) -> None:
        if self._hypervisor.state(uuid) != DomainState.MISSING:
            self._hypervisor.detach(uuid, function_id)

    # -- power and console -------------------------------------------------
    def power_on(self, uuid: str) -> None:
        self._hypervisor.start(uuid)
        if self._hypervisor.state(uuid) == DomainState.PAUSED:
            self._hypervisor.unpause(uuid)

    def power_off(self, uuid: str) -> None:
        state = self._hypervisor.state(uuid)
        if state in (DomainState.OFF, DomainState.MISSING):
            return
        if state == DomainState.PAUSED:  # a paused guest cannot hear the power button
            self._hypervisor.unpause(uuid)
        try:
            self._hypervisor.stop(uuid, soft=True, timeout=self._stop_timeout)
        except DriverError:  # the guest did not power off in time: pull the plug
            self._hypervisor.stop(uuid, soft=False)

    def reboot(self, uuid: str, kind: RebootKind) -> None:
        self._hypervisor.reboot(uuid, soft=kind == "soft")

    def power_state(self, uuid: str) -> PowerState:
        return "on" if self._hypervisor.state(uuid) in (DomainState.RUNNING, DomainState.PAUSED) else "off"

    def pause(self, uuid: str) -> None:
        self._hypervisor.pause(uuid)

    def unpause(self, uuid: str) -> None:
        self._hypervisor.unpause(uuid)

    def paused(self, uuid: str) -> bool:
        return self._hypervisor.state(uuid) == DomainState.PAUSED

    def console(self, uuid: str) -> Console:
        """The domain's serial console is streamed by the agent, and relayed by the controller, at this path."""
        return Console(type="serial", url=f"/v1/instances/{uuid}/console/stream")

    def serial_console(self, uuid: str) -> SerialConsole:
        return self._hypervisor.serial_console(uuid)

    def set_password(self, uuid: str, user: str, password: str) -> None:
        self._hypervisor.set_password(uuid, user, password)

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _passed(function: InstanceFunction, slot: int, boot_order: int | None) -> PassedFunction:
        return PassedFunction(id=function.id, host_bdf=function.bdf, kind=function.kind, slot=slot,
                              mac=function.mac, boot_order=boot_order)
