"""An instance's status, shared by the controller and the agent, and the rules that change it.

The controller shows one of :class:`InstanceStatus` in the API and keeps it in
its database; an agent answers ``ACTIVE``, ``SHUTOFF``, ``PAUSED`` or ``ERROR``
for the instances it holds (:data:`AgentStatus`) and reports each as ``up``,
``down``, ``paused`` or ``error``. The values are the strings on the wire and
in both databases.

How actions move an instance, on the controller::

    create  (new) BUILDING ------------------> ACTIVE
    stop    ACTIVE | SHUTOFF | PAUSED | ERROR -> SHUTOFF
    start   ACTIVE | SHUTOFF | ERROR --------> ACTIVE
    reboot  ACTIVE | SHUTOFF | ERROR -> REBOOTING -> ACTIVE
    pause   ACTIVE | PAUSED -----------------> PAUSED   (VMs only)
    unpause PAUSED | ACTIVE -----------------> ACTIVE   (VMs only)
    set_password (a VM) ACTIVE ------------> ACTIVE (a failure leaves it ACTIVE)
    resize  ACTIVE | SHUTOFF -> RESIZE --------> VERIFY_RESIZE           (VMs only)
    resize_confirm VERIFY_RESIZE -------------> ACTIVE | SHUTOFF (as before the resize; no operation)
    resize_revert  VERIFY_RESIZE -> REVERT_RESIZE -> ACTIVE | SHUTOFF (as before the resize)
    migrate ACTIVE | SHUTOFF -> MIGRATING -----> VERIFY_MIGRATE          (VMs and bare metal; cold)
    migrate_confirm VERIFY_MIGRATE -----------> ACTIVE | SHUTOFF (as before the migration; no operation)
    migrate_revert  VERIFY_MIGRATE -> REVERT_MIGRATE -> ACTIVE | SHUTOFF (on the source node again)
    live_migrate ACTIVE -> MIGRATING --------> ACTIVE (a VM, on the target; no confirm)
    delete  any ---------------------> DELETING -> DELETED
    any action that fails -------------------> ERROR (with a fault; a resize, a migration or a revert:
                                                as it was before it, ERROR only if an undo failed)

PAUSED is a VM whose vCPUs are stopped, its memory and devices kept: its
power is ``on``. Pausing a PAUSED instance and unpausing an ACTIVE one are
accepted and change nothing. A bare-metal host cannot be paused (the
controller refuses before any operation starts). Stopping a PAUSED VM
resumes it first so that its OS shuts down by the power button, as a
running one does (pulled after the stop timeout); deleting one does the
same. Start and reboot need it unpaused first (as Nova, 409): a reboot of a
frozen guest is not what a user means, and ``start`` of a powered-on
instance would do nothing. Adding or removing a NIC or a volume needs
ACTIVE or SHUTOFF (removing one ERROR too), not PAUSED: a paused guest
cannot take a device or let one go, and keeps the status.

A resize (as Nova's on one host) stops a running VM, defines it again with the new flavor's vCPUs, memory and
NUMA placement and starts it again if it ran; it then waits in VERIFY_RESIZE, running the new flavor while the
controller holds the claims of both flavors, until the user confirms (the old claim is freed; nothing changes
on the node) or reverts (the VM is defined again with the old flavor, the new claim freed). A failed resize or
revert leaves the VM as it was before it (with its old flavor after a failed resize, the new one after a
failed revert), in the status it had: the operation's error says why. VERIFY_RESIZE takes no other action
than confirm, revert and delete (which frees both claims); a bare-metal host cannot be resized (its host is
the instance).

A cold migration (docs/migration.md) moves an instance to another node, of its type or (with a flavor of the
other type) from bare metal to a VM or back: the target's claims are taken when the API accepts it, the source
stops the instance, the target builds it on the same ports and volumes, the ports' binding moves, and the
source lets go of its functions. It then waits in VERIFY_MIGRATE, running (or off, as it was) on the target
while the controller holds the claims of both nodes, until the user confirms (the source's claims are freed;
nothing runs) or reverts (the instance is built again on the source with its old flavor, the target's claims
freed). A failed migration or revert leaves the instance where it was, in the status it had. VERIFY_MIGRATE
takes no other action than confirm, revert and delete (which frees both nodes' claims). Its own statuses
(not Nova's VERIFY_RESIZE, which Nova shows for both) say which confirm the instance waits for.

An idle ACTIVE, SHUTOFF or PAUSED instance follows what its node reports
(the OS may shut the host down; a VM may be paused or resumed on its host).

On its node an instance is ACTIVE or SHUTOFF by its power, PAUSED while its
domain is paused (power ``on``), and ERROR while a reconcile pass cannot
repair what it holds; powering the host from the BMC API leaves an ERROR
instance in ERROR.
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
    PAUSED = "PAUSED"
    RESIZE = "RESIZE"
    VERIFY_RESIZE = "VERIFY_RESIZE"
    REVERT_RESIZE = "REVERT_RESIZE"
    MIGRATING = "MIGRATING"
    VERIFY_MIGRATE = "VERIFY_MIGRATE"
    REVERT_MIGRATE = "REVERT_MIGRATE"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"


ACTIVE, SHUTOFF, ERROR = InstanceStatus.ACTIVE, InstanceStatus.SHUTOFF, InstanceStatus.ERROR
PAUSED = InstanceStatus.PAUSED
VERIFY_RESIZE = InstanceStatus.VERIFY_RESIZE
VERIFY_MIGRATE = InstanceStatus.VERIFY_MIGRATE

#: Whether the machine an instance runs on (its host, for bare metal) is on or off.
PowerState = Literal["on", "off"]

#: The statuses an agent answers for an instance it holds.
AgentStatus = Literal[InstanceStatus.ACTIVE, InstanceStatus.SHUTOFF, InstanceStatus.PAUSED, InstanceStatus.ERROR]

#: An instance's status on its node, by its power, while nothing is wrong with it.
STATUS_BY_POWER: dict[PowerState, InstanceStatus] = {"on": ACTIVE, "off": SHUTOFF}

#: How a node reports an instance to the controller.
ReportedStatus = Literal["up", "down", "paused", "error"]

#: The status the controller takes from a node's report, for an idle instance in one of these.
STATUS_BY_REPORT: dict[str, InstanceStatus] = {"up": ACTIVE, "down": SHUTOFF, "paused": PAUSED}


def observed_status(power: PowerState, fault: str | None, *, paused: bool = False) -> InstanceStatus:
    """The status of an instance its node sees with ``power`` (``paused``: its CPUs are stopped): ERROR
    while it has a fault, PAUSED while it is paused (and on)."""
    if fault:
        return ERROR
    return PAUSED if paused and power == "on" else STATUS_BY_POWER[power]


def reported_status(status: str, power: str) -> ReportedStatus:
    """What a node reports of an instance: ``error`` in ERROR, ``paused`` in PAUSED, else ``up`` or ``down``
    by its power."""
    if status == ERROR:
        return "error"
    if status == PAUSED:
        return "paused"
    return "up" if power == "on" else "down"


_RUNNING_OR_NOT = (ACTIVE, SHUTOFF, ERROR)

#: The statuses from which each action may start; an action not named here may start from any.
ALLOWED_FROM: dict[str, tuple[InstanceStatus, ...]] = {
    "stop": (*_RUNNING_OR_NOT, PAUSED),
    "start": _RUNNING_OR_NOT,
    "reboot": _RUNNING_OR_NOT,
    "pause": (ACTIVE, PAUSED),
    "unpause": (PAUSED, ACTIVE),
    "add_nic": (ACTIVE, SHUTOFF),
    "remove_nic": _RUNNING_OR_NOT,
    "add_volume": (ACTIVE, SHUTOFF),
    "remove_volume": _RUNNING_OR_NOT,
    "set_password": (ACTIVE,),
    "resize": (ACTIVE, SHUTOFF),
    "resize_confirm": (VERIFY_RESIZE,),
    "resize_revert": (VERIFY_RESIZE,),
    "migrate": (ACTIVE, SHUTOFF),
    "live_migrate": (ACTIVE,),
    "migrate_confirm": (VERIFY_MIGRATE,),
    "migrate_revert": (VERIFY_MIGRATE,),
}

#: The status an instance shows while the action runs; an action not named here leaves it as it is.
STATUS_DURING: dict[str, InstanceStatus] = {"reboot": InstanceStatus.REBOOTING, "delete": InstanceStatus.DELETING,
                                           "force_delete": InstanceStatus.DELETING,
                                           "resize": InstanceStatus.RESIZE,
                                           "resize_revert": InstanceStatus.REVERT_RESIZE,
                                           "migrate": InstanceStatus.MIGRATING,
                                           "live_migrate": InstanceStatus.MIGRATING,
                                           "migrate_revert": InstanceStatus.REVERT_MIGRATE}

#: The status an action leaves when it succeeds; an action not named here leaves it as it is.
STATUS_AFTER: dict[str, InstanceStatus] = {
    "create": ACTIVE, "stop": SHUTOFF, "start": ACTIVE, "reboot": ACTIVE, "pause": PAUSED, "unpause": ACTIVE,
    "delete": InstanceStatus.DELETED, "force_delete": InstanceStatus.DELETED, "resize": VERIFY_RESIZE,
    "migrate": VERIFY_MIGRATE, "live_migrate": ACTIVE,
}

#: The statuses of an instance being moved between nodes: its volumes may be attached on both meanwhile.
MOVING = (InstanceStatus.MIGRATING, InstanceStatus.REVERT_MIGRATE)

#: The actions only a VM takes: a bare-metal host has no pause, and its flavor is its host's.
VM_ONLY = ("pause", "unpause", "resize", "resize_confirm", "resize_revert")

#: The statuses in which an instance has a console.
WITH_CONSOLE = (ACTIVE, SHUTOFF, PAUSED, InstanceStatus.REBOOTING, InstanceStatus.RESIZE, VERIFY_RESIZE,
                InstanceStatus.REVERT_RESIZE, VERIFY_MIGRATE)
