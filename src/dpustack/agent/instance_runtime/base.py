"""InstanceRuntime: what the compute role asks of whatever runs a node's instances."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Set
from dataclasses import dataclass

from dpustack.contract.instances import BuildRequest
from dpustack.drivers.bmc import Console, RebootKind, SerialConsole
from dpustack.drivers.functions import FunctionKind
from dpustack.errors import Conflict
from dpustack.instance_states import PowerState


@dataclass(frozen=True)
class InstanceFunction:
    """One of the DPU's functions an instance has: its host BDF as the function driver returned it."""

    id: str
    kind: FunctionKind
    bdf: str
    mac: str | None = None  # net: the port's MAC
    bootable: bool = False  # storage: a boot volume


class InstanceRuntime(abc.ABC):
    """Power and console of each instance a node runs, and whether one more fits.

    Every call names its instance by uuid, so a runtime with several
    instances per node keeps a power state for each; the compute role records
    the instance first and undoes its own calls on a failure.

    The DPU's functions reach the host by themselves (the function driver
    hot-plugs them); what runs the instance may then have to be given them:
    :meth:`define`, :meth:`plug` and :meth:`unplug` do that, and do nothing
    where the instance is the host itself.
    """

    #: what an instance runs on, as the compute role's step names say it ("power on host")
    machine: str
    #: whether the instance must be given the DPU's functions (:meth:`define`, :meth:`plug`), which a host
    #: has as soon as they exist
    passes_functions: bool = False
    #: whether the instance's vCPUs and memory can change (:meth:`redefine`); a host's are the host's
    resizable: bool = False

    @abc.abstractmethod
    def check_room(self, uuid: str, hosted: Set[str]) -> None:
        """Raise Conflict (``field="uuid"``) unless instance ``uuid`` fits beside the ``hosted`` ones."""

    @abc.abstractmethod
    def power_on(self, uuid: str) -> None:
        """Start the instance; a running one is fine."""

    @abc.abstractmethod
    def power_off(self, uuid: str) -> None:
        """Stop the instance; a stopped one is fine."""

    @abc.abstractmethod
    def reboot(self, uuid: str, kind: RebootKind) -> None:
        """Restart the instance: ``hard`` resets (and starts a stopped one), ``soft`` asks its OS."""

    @abc.abstractmethod
    def power_state(self, uuid: str) -> PowerState:
        """Whether the instance is on or off (a paused one is on)."""

    @abc.abstractmethod
    def pause(self, uuid: str) -> None:
        """Stop the running instance's CPUs, its memory kept; paused already is fine. Conflict where instances
        cannot be paused; DriverError if it is off."""

    @abc.abstractmethod
    def unpause(self, uuid: str) -> None:
        """Let the paused instance's CPUs run on; running already is fine. Conflict where instances cannot be
        paused; DriverError if it is off."""

    def paused(self, uuid: str) -> bool:
        """Whether the instance is paused (on, its CPUs stopped); never, by default."""
        return False

    @abc.abstractmethod
    def console(self, uuid: str) -> Console:
        """Where the instance's console can be reached."""

    @abc.abstractmethod
    def serial_console(self, uuid: str) -> SerialConsole:
        """A new, detached stream of the instance's serial console; DriverError if there is none to carry."""

    def define(self, request: BuildRequest, functions: list[InstanceFunction],
               slots: Mapping[str, int] | None = None) -> None:
        """Make what runs the instance, off, with ``functions`` (in the order given, or in the guest slots
        ``slots`` gives by function or device id, as :meth:`layout` read them); the same again is nothing to
        do. Nothing by default: the instance is the host."""

    def redefine(self, request: BuildRequest, functions: list[InstanceFunction]) -> None:
        """Make what runs the instance, off, again from ``request`` (another flavor), its ``functions`` where
        they were; only where :attr:`resizable`. Nothing by default."""

    def defined(self, uuid: str) -> bool:
        """Whether what runs the instance exists (a host always does)."""
        return True

    def layout(self, uuid: str) -> dict[str, int]:
        """The guest slot of each function and device of the instance, by id, for :meth:`define` to put them
        there again; none by default (a host's slots are its own)."""
        return {}

    def undefine(self, uuid: str) -> None:
        """Stop and forget what runs the instance; gone already is fine. Nothing by default."""

    def plug(self, uuid: str, function: InstanceFunction) -> None:
        """Give the instance one more function, running or not; given already is fine. Nothing by default."""

    def unplug(self, uuid: str, function_id: str) -> None:
        """Take a function from the instance, returning once it let go; not there is fine. Nothing by default."""

    def set_password(self, uuid: str, user: str, password: str) -> None:
        """Set ``user``'s password in the running instance now. A Conflict by default: a host takes its
        password from the metadata service at its next boot, nothing on the node sets it."""
        raise Conflict(f"instance '{uuid}' runs on the {self.machine}: its password is taken from the metadata "
                       "service at its next boot, not set by this node", field="uuid")

    def switch_power(self, uuid: str, target: PowerState) -> None:
        """Turn the instance ``target`` (on or off)."""
        if target == "on":
            self.power_on(uuid)
        else:
            self.power_off(uuid)
