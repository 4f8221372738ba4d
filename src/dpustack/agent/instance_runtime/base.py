"""InstanceRuntime: what the compute role asks of whatever runs a node's instances."""

from __future__ import annotations

import abc
from collections.abc import Set

from dpustack.drivers.bmc import Console, RebootKind, SerialConsole
from dpustack.instance_states import PowerState


class InstanceRuntime(abc.ABC):
    """Power and console of each instance a node runs, and whether one more fits.

    Every call names its instance by uuid, so a runtime with several
    instances per node keeps a power state for each; the compute role records
    the instance first and undoes its own calls on a failure.
    """

    #: what an instance runs on, as the compute role's step names say it ("power on host")
    machine: str

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
        """Whether the instance is on or off."""

    @abc.abstractmethod
    def console(self, uuid: str) -> Console:
        """Where the instance's console can be reached."""

    @abc.abstractmethod
    def serial_console(self, uuid: str) -> SerialConsole:
        """A new, detached stream of the instance's serial console; DriverError if there is none to carry."""

    def switch_power(self, uuid: str, target: PowerState) -> None:
        """Turn the instance ``target`` (on or off)."""
        if target == "on":
            self.power_on(uuid)
        else:
            self.power_off(uuid)
