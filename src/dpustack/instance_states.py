"""An instance's status, shared by the controller and the agent, and the rules that change it.

The controller shows one of :class:`InstanceStatus` in the API and keeps it in
its database; an agent answers ``ACTIVE``, ``SHUTOFF`` or ``ERROR`` for the
instances it holds (:data:`AgentStatus`) and reports each as ``up``, ``down``
or ``error``. The values are the strings on the wire and in both databases.

How actions move an instance, on the controller::

    create  (new) BUILDING ------------------> ACTIVE
    stop    ACTIVE | SHUTOFF | ERROR --------> SHUTOFF
    start   ACTIVE | SHUTOFF | ERROR --------> ACTIVE
    reboot  ACTIVE | SHUTOFF | ERROR -> REBOOTING -> ACTIVE
    set_password (a VM) ACTIVE ------------> ACTIVE (a failure leaves it ACTIVE)
    delete  any ---------------------> DELETING -> DELETED
    any action that fails -------------------> ERROR (with a fault)

Adding a NIC or a volume needs ACTIVE or SHUTOFF and keeps the status;
removing one is allowed from ERROR too. An idle ACTIVE or SHUTOFF instance
follows the power its node reports (the OS may shut the host down).

On its node an instance is ACTIVE or SHUTOFF by its power, and ERROR while a
reconcile pass cannot repair what it holds; powering the host from the BMC
API leaves an ERROR instance in ERROR.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class InstanceStatus(StrEnum):
    """What the API shows of an instance."""

    BUILDING = "BUILDING"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    REBOOTING = "REBOOTING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"


ACTIVE, SHUTOFF, ERROR = InstanceStatus.ACTIVE, InstanceStatus.SHUTOFF, InstanceStatus.ERROR

#: Whether the machine an instance runs on (its host, for bare metal) is on or off.
PowerState = Literal["on", "off"]

#: The statuses an agent answers for an instance it holds.
AgentStatus = Literal[InstanceStatus.ACTIVE, InstanceStatus.SHUTOFF, InstanceStatus.ERROR]

#: An instance's status on its node, by its power, while nothing is wrong with it.
STATUS_BY_POWER: dict[PowerState, InstanceStatus] = {"on": ACTIVE, "off": SHUTOFF}

#: How a node reports an instance to the controller.
ReportedStatus = Literal["up", "down", "error"]

#: The status the controller takes from a node's report, for an idle instance in one of these.
STATUS_BY_REPORT: dict[str, InstanceStatus] = {"up": ACTIVE, "down": SHUTOFF}


def observed_status(power: PowerState, fault: str | None) -> InstanceStatus:
    """The status of an instance its node sees with ``power``: ERROR while it has a fault."""
    return ERROR if fault else STATUS_BY_POWER[power]


def reported_status(status: str, power: str) -> ReportedStatus:
    """What a node reports of an instance: ``error`` in ERROR, else ``up`` or ``down`` by its power."""
    if status == ERROR:
        return "error"
    return "up" if power == "on" else "down"


_RUNNING_OR_NOT = (ACTIVE, SHUTOFF, ERROR)

#: The statuses from which each action may start; an action not named here may start from any.
ALLOWED_FROM: dict[str, tuple[InstanceStatus, ...]] = {
    "stop": _RUNNING_OR_NOT,
    "start": _RUNNING_OR_NOT,
    "reboot": _RUNNING_OR_NOT,
    "add_nic": (ACTIVE, SHUTOFF),
    "remove_nic": _RUNNING_OR_NOT,
    "add_volume": (ACTIVE, SHUTOFF),
    "remove_volume": _RUNNING_OR_NOT,
    "set_password": (ACTIVE,),
}

#: The status an instance shows while the action runs; an action not named here leaves it as it is.
STATUS_DURING: dict[str, InstanceStatus] = {"reboot": InstanceStatus.REBOOTING, "delete": InstanceStatus.DELETING,
                                           "force_delete": InstanceStatus.DELETING}

#: The status an action leaves when it succeeds; an action not named here leaves it as it is.
STATUS_AFTER: dict[str, InstanceStatus] = {
    "create": ACTIVE, "stop": SHUTOFF, "start": ACTIVE, "reboot": ACTIVE,
    "delete": InstanceStatus.DELETED, "force_delete": InstanceStatus.DELETED,
}

#: The statuses in which an instance has a console.
WITH_CONSOLE = (ACTIVE, SHUTOFF, InstanceStatus.REBOOTING)
