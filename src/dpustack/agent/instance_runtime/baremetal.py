"""BareMetalRuntime: the instance is the node's host, driven through the host's BMC."""

from __future__ import annotations

from collections.abc import Set

from dpustack.agent.instance_runtime.base import InstanceRuntime
from dpustack.drivers.bmc import BmcDriver, Console, RebootKind, SerialConsole
from dpustack.errors import Conflict
from dpustack.instance_states import PowerState


class BareMetalRuntime(InstanceRuntime):
    """At most one instance per node; its power and console are the host's."""

    machine = "host"

    def __init__(self, bmc: BmcDriver):
        self._bmc = bmc

    def check_room(self, uuid: str, hosted: Set[str]) -> None:
        others = sorted(hosted - {uuid})
        if others:
            raise Conflict(f"this bare-metal node already hosts instance '{others[0]}'", field="uuid")

    def power_on(self, uuid: str) -> None:
        self._bmc.power_on()

    def power_off(self, uuid: str) -> None:
        self._bmc.power_off()

    def reboot(self, uuid: str, kind: RebootKind) -> None:
        self._bmc.reboot(kind)

    def power_state(self, uuid: str) -> PowerState:
        return self._bmc.power_state()

    def pause(self, uuid: str) -> None:
        raise _no_pause()

    def unpause(self, uuid: str) -> None:
        raise _no_pause()

    def console(self, uuid: str) -> Console:
        return self._bmc.console()

    def serial_console(self, uuid: str) -> SerialConsole:
        return self._bmc.serial_console()


def _no_pause() -> Conflict:
    return Conflict("bare-metal instances cannot be paused or unpaused: only a VM can (stop the host instead)",
                    field="uuid")
