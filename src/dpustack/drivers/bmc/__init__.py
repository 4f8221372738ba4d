"""BmcDriver: the host's baseboard management controller, reached from the DPU SoC."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import PositiveInt

from dpustack.drivers.base import Driver
from dpustack.drivers.options import DriverOptions
from dpustack.instance_states import PowerState  # the host's power is its bare-metal instance's

RebootKind = Literal["hard", "soft"]


@dataclass(frozen=True)
class BmcAccess:
    """Where the BMC is and how to log in; the password never shows in a repr."""

    address: str = ""
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class HardwareInfo:
    """The host as the BMC describes it; ``mem`` in MiB."""

    serial_number: str
    cpu: int
    mem: int
    model: str


@dataclass(frozen=True)
class Console:
    """How to reach the host's console."""

    type: str
    url: str


class SerialConsole(abc.ABC):
    """The host's serial console as a byte stream that outlives the host's restarts.

    Attached, what the host writes reaches ``output`` (in a thread of the
    console's own), and what is written is typed on the console; while the
    host is off or the BMC unreachable the console reopens by itself.
    """

    @abc.abstractmethod
    def attach(self, output: Callable[[bytes], None]) -> None:
        """Send the host's output to ``output`` from now on, taking the console over from whoever holds it;
        returns at once (the console opens in the background)."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Type ``data`` on the console (kept until it is open, while attached)."""

    @abc.abstractmethod
    def detach(self) -> None:
        """Stop forwarding and let the console go."""


class HostOptions(DriverOptions):
    """[bmc.host]: the host's CPU count and memory (MiB), for BMCs that do not report them."""

    cpu: PositiveInt | None = None
    mem: PositiveInt | None = None


class BmcDriver(Driver):
    """Power, hardware description and console of the host.

    Every implementation is made with the :class:`BmcAccess` of ``[bmc]``; those that need the host's
    size when the BMC does not report it take ``[bmc.host]`` (``shared_options = ("bmc.host",)``).
    """

    interface = "bmc"
    shared_tables = {"bmc.host": HostOptions}

    @abc.abstractmethod
    def power_on(self) -> None:
        """Turn the host on; an already running host is fine."""

    @abc.abstractmethod
    def power_off(self) -> None:
        """Turn the host off; an already stopped host is fine."""

    @abc.abstractmethod
    def reboot(self, kind: RebootKind) -> None:
        """Restart the host: ``hard`` resets (and starts a stopped host), ``soft`` asks the OS."""

    @abc.abstractmethod
    def power_state(self) -> PowerState:
        """Whether the host is on or off."""

    @abc.abstractmethod
    def hw_info(self) -> HardwareInfo:
        """Serial number, CPU count, memory and model of the host."""

    @abc.abstractmethod
    def console(self) -> Console:
        """Where the host console can be reached."""

    @abc.abstractmethod
    def serial_console(self) -> SerialConsole:
        """A new, detached stream of the host's serial console; DriverError if this BMC offers none that
        dpustack can carry."""
