"""Cold migration: move an instance to another node (a VM's or a host), with its ports and volumes.

`start_migrate` checks the request, then, in the request's transaction, claims the target: the scheduler
picks a node of the flavor's type (or the one given), never the instance's own, and claims its CPU, RAM, PCI
devices (the instance's PCI requests asked again there) and, for a VM, NUMA placement. Nothing stops before
that claim holds, and a move the target cannot take is a 409 saying why. The instance then holds the
target: its node, flavor, vCPUs, RAM and placement are the target's; `resize_from`, the context a resize
keeps too (`services.resize.old_context`), holds what it had plus `node_id`, the node it left, whose claims
count until `confirm_migrate` frees them, and `bdfs`, where its functions were on that node (by port or volume
id), for a move back to put them there again. A failed migration and a revert end in `back_to_source`, which
frees the target's claims and puts the instance's record back on its source.

What cannot move is refused (409, before any operation, nothing claimed): a remote-managed NIC (its VF and
representor are the source card's), a flavor whose disk is smaller than the boot volume (a volume is not
shrunk), a flavor asking other PCI devices than the instance's, a node of another type than the flavor's,
the instance's own node.

A live migration (`live`, a VM on a vm node, running) is the operation `live_migrate`
(`workflows.live_migrate`), claimed the same way with the instance's own flavor; what cannot move live is
refused too (`_check_live`): it ends with `finish_live` (no confirm), and `abort_live` aborts it while its
memory moves.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller import orchestrator, scheduler
from dpustack.controller.numa_fit import numa_request
from dpustack.controller.resource_requests import ClaimRace, NumaCells, PciDevices, ResourceRequest
from dpustack.controller.services import flavors, instances, nodes, numa, pci, resize, volumes
from dpustack.controller.services.common import Caller
from dpustack.db.models import Flavor, Instance, Node, Operation, Port, Volume
from dpustack.errors import Conflict
from dpustack.instance_states import InstanceStatus
from dpustack.pci.requests import EXTRA_SPEC, numa_policy


def start_migrate(session: Session, caller: Caller, ref: str, *, down_after: float, node_ref: str | None = None,
                  flavor_ref: str | None = None, live: bool = False) -> Operation:
    """Claim a target node for the instance (up: reported within `down_after` seconds) and start the operation
    `migrate` (`live`: `live_migrate`). 403 naming `node` for a target given without an admin token; 404
    naming `node` or `flavor`
    for one that does not exist; 409 naming `instance` for a status other than ACTIVE or SHUTOFF, a busy
    instance or a remote-managed NIC, naming `node` for the instance's own node or a node of another type
    than the flavor's, naming `flavor` for a smaller disk than the boot volume or other PCI devices, naming
    `volume` for a volume another operation holds, and naming `node` (given) or `instance` when no node can
    take it, saying why. `live`: the operation `live_migrate`, refused as `_check_live` says."""
    action = "live_migrate" if live else "migrate"
    instance = instances.get_instance(session, caller, ref)
    instances.check_allowed(instance, "migrate")
    if instance.node_id is None:
        raise Conflict(f"instance '{instance.name}' has no node (its build failed); delete it", field="instance")
    source = session.get_one(Node, instance.node_id)
    target = None
    if node_ref:
        caller.require_admin()
        target = nodes.get_node(session, node_ref)
    flavor = flavors.get_flavor(session, flavor_ref) if flavor_ref else instance.flavor
    if flavor is None:
        raise Conflict(f"instance '{instance.name}' has no flavor any more: give one (`flavor`)", field="flavor")
    if live:
        _check_live(session, instance, source, flavor)
    _check_target(instance, source, target, flavor, given=flavor_ref is not None)
    _check_movable(session, instance, flavor)
    if flavor.type == "vm":
        numa.check_specs(flavor, flavor.extra_specs or {}, field_prefix="flavor.")
    status = instance.status
    operation = instances.start_action(session, caller, ref, action, {"flavor_id": flavor.id})
    for volume in _volumes(session, instance):
        volumes.hold(session, volume, operation)
    instance.resize_from = {**resize.old_context(instance, status), "node_id": source.id,
                            "bdfs": _host_addresses(session, instance)}
    node = _claim(session, instance, source, target, flavor, down_after)
    instance.node_id, instance.flavor_id, instance.vcpus, instance.ram = node.id, flavor.id, flavor.vcpus, flavor.ram
    if node.node_type != "vm":
        instance.numa_placement = None  # a host has no placement; a VM's was stored by its claim
    return operation


def _check_live(session: Session, instance: Instance, source: Node, flavor: Flavor) -> None:
    """409 for what cannot move live: bare metal (the host is the instance: `instance`), another flavor
    (`flavor`), an instance that does not run (`instance`: SHUTOFF has nothing to move live, PAUSED is
    refused as for a cold move) and PCI devices (`instance`: they cannot leave a guest that uses them)."""
    if source.node_type != "vm":
        raise Conflict(f"instance '{instance.name}' is a bare-metal host: its memory cannot move live; migrate it "
                       "cold (to a VM with a vm flavor)", field="instance")
    if flavor.id != instance.flavor_id:
        raise Conflict(f"a live migration keeps the flavor of '{instance.name}': migrate it cold to change it "
                       f"to '{flavor.name}', or resize it", field="flavor")
    if instance.status != InstanceStatus.ACTIVE:
        raise Conflict(f"instance '{instance.name}' is {instance.status}: only a running VM migrates live (one "
                       "that is off migrates cold: nothing runs to move)", field="instance")
    if PciDevices.of_instance(session, instance.id, {}) is not None:
        raise Conflict(f"instance '{instance.name}' has PCI devices passed through: they cannot be unplugged "
                       "under its guest nor move with its memory; migrate it cold", field="instance")


def _check_target(instance: Instance, source: Node, target: Node | None, flavor: Flavor, *, given: bool) -> None:
    if target is not None and target.id == source.id:
        raise Conflict(f"instance '{instance.name}' runs on node {source.hostname} already: a migration moves it "
                       "to another node (a resize changes a VM's flavor on its node)", field="node")
    if target is not None and target.node_type != flavor.type:
        how = (f"its flavor '{flavor.name}' is a {flavor.type} flavor" if given else
               f"moving it there needs a {target.node_type} flavor (`flavor`)")
        raise Conflict(f"node {target.hostname} is a {target.node_type} node: {how}", field="node")


def _check_movable(session: Session, instance: Instance, flavor: Flavor) -> None:
    """409 for what cannot move: a remote-managed NIC, a smaller disk than the boot volume, other PCI devices."""
    remote = session.scalars(select(Port).where(Port.instance_id == instance.id,
                                                Port.vnic_type == instances.REMOTE_MANAGED)).first()
    if remote is not None:
        raise Conflict(f"port {remote.id} of '{instance.name}' is a remote-managed NIC: its VF and representor "
                       "belong to the card of the node it runs on, so it cannot move (as it cannot be detached)",
                       field="instance")
    boot = next((v for v in _volumes(session, instance) if v.bootable), None)
    if boot is not None and flavor.disk < boot.size:
        raise Conflict(f"flavor '{flavor.name}' has a smaller disk ({flavor.disk} GiB) than the boot volume of "
                       f"'{instance.name}' ({boot.size} GiB): a volume is not shrunk", field="flavor")
    old = instance.flavor
    if old is not None and (flavor.extra_specs or {}).get(EXTRA_SPEC) != (old.extra_specs or {}).get(EXTRA_SPEC):
        raise Conflict(f"flavor '{flavor.name}' asks other PCI devices ({EXTRA_SPEC}) than '{old.name}': a "
                       "migration asks the target for the devices the instance has", field="flavor")


def _volumes(session: Session, instance: Instance) -> list[Volume]:
    return list(session.scalars(select(Volume).where(Volume.instance_id == instance.id)
                                .order_by(Volume.bootable.desc(), Volume.created_at)))


def _host_addresses(session: Session, instance: Instance) -> dict[str, str]:
    """The host address (BDF) of each of the instance's functions on its node, by port or volume id: where a
    move back (a revert) puts them again, so a host finds its NICs and disks where they were."""
    ports = session.scalars(select(Port).where(Port.instance_id == instance.id))
    found = {port.id: port.binding_profile["bdf"] for port in ports if (port.binding_profile or {}).get("bdf")}
    found.update({volume.id: volume.bdf for volume in _volumes(session, instance) if volume.bdf})
    return found


def _claim(session: Session, instance: Instance, source: Node, target: Node | None, flavor: Flavor,
           down_after: float) -> Node:
    """The target, chosen (or the one given) and claimed for `flavor` with the instance's PCI requests and,
    on a VM node, a NUMA placement; 409 naming `node` (given) or `instance` with why none can take it."""
    specs = flavor.extra_specs or {}
    requests: list[ResourceRequest] = []
    pci_request = PciDevices.of_instance(session, instance.id, {"pci_policy": numa_policy(specs)})
    if pci_request is not None:
        requests.append(pci_request)
    if flavor.type == "vm":
        requests.append(NumaCells(numa_request(flavor.vcpus, flavor.ram, numa.numa_specs(specs)), instance.id,
                                  pci_request))
    demand = scheduler.Demand(node_type=flavor.type, vcpus=flavor.vcpus, ram=flavor.ram, resources=tuple(requests))
    field = "node" if target is not None else "instance"
    try:
        return scheduler.schedule(session, demand, down_after, instance_id=instance.id,
                                  pinned=target.id if target else None, avoid=source.id)
    except ClaimRace as exc:
        raise Conflict(f"cannot migrate '{instance.name}' now: {exc.message}; try again", field=field) from exc
    except scheduler.NoValidNode as exc:
        where = f"to node {target.hostname}" if target is not None else "anywhere"
        raise Conflict(f"cannot migrate '{instance.name}' {where} with flavor '{flavor.name}': {exc.message}",
                       field=field) from exc


def source_node_id(instance: Instance) -> str | None:
    """The node a migrating (or VERIFY_MIGRATE) instance left, whose claims it holds; None otherwise."""
    return (instance.resize_from or {}).get("node_id")


def confirm_migrate(session: Session, caller: Caller, ref: str) -> Instance:
    """Keep the instance on its new node: free the source node's CPU, RAM, PCI devices and placement; the
    instance is ACTIVE or SHUTOFF again, as before its migration. Nothing runs on a node (the source let go
    of its functions during the migration). 409 naming `instance` but in VERIFY_MIGRATE, and while an
    operation holds it (a revert)."""
    instance = instances.get_instance(session, caller, ref)
    instances.check_allowed(instance, "migrate_confirm")
    orchestrator.lock_instance(session, instance, "migrate_confirm")  # no revert meanwhile; read again
    instances.check_allowed(instance, "migrate_confirm")
    old = instance.resize_from
    if not old:  # done already (a resumed step)
        return
    _release_node(session, instance, old["node_id"], old["vcpus"], old["ram"])
    instance.status, instance.resize_from, instance.task_state = old["status"], None, None
    return instance


def start_revert(session: Session, caller: Caller, ref: str) -> Operation:
    """Start the operation `migrate_revert`, which builds the instance again on its source node with its old
    flavor and takes it from the target; 409 naming `instance` but in VERIFY_MIGRATE."""
    instance = instances.get_instance(session, caller, ref)
    instances.check_allowed(instance, "migrate_revert")
    operation = instances.start_action(session, caller, ref, "migrate_revert")
    for volume in _volumes(session, instance):
        volumes.hold(session, volume, operation)
    return operation


def finish_live(session: Session, instance: Instance) -> None:
    """A live migration done: the source's CPU, RAM and placement freed, the instance ACTIVE on the target,
    without a fault or the context of its move."""
    old = instance.resize_from
    if not old:  # done already (a resumed step)
        return
    _release_node(session, instance, old["node_id"], old["vcpus"], old["ram"])
    instance.status, instance.resize_from, instance.fault = InstanceStatus.ACTIVE, None, None


def abort_live(session: Session, caller: Caller, ref: str) -> tuple[Operation, Node]:
    """The instance's live migration that may be aborted now (its memory moves: the step `migrate_live`
    runs), and its source node, whose agent aborts it. 409 naming `instance` for an instance without a live
    migration in progress, or one that is not at that step (before it: try again; after it: too late)."""
    instance = instances.get_instance(session, caller, ref)
    operation = session.scalars(select(Operation).where(
        Operation.instance_id == instance.id, Operation.action == "live_migrate",
        Operation.status.in_(("pending", "running"))).order_by(Operation.created_at.desc())).first()
    if operation is None:
        raise Conflict(f"instance '{instance.name}' has no live migration in progress", field="instance")
    running = next((step.name for step in operation.steps if step.status == "running"), None)
    if running != "migrate_live":
        raise Conflict(f"the live migration of '{instance.name}' is at step {running or 'none yet'}: it is aborted "
                       "while its memory moves (step migrate_live); try again", field="instance")
    source = source_node_id(instance)
    assert source is not None, "a live migration holds its source"
    return operation, session.get_one(Node, source)


def back_to_source(session: Session, instance: Instance) -> None:
    """The instance's record on its source again (a revert, or a migration that failed): the target's CPU,
    RAM, PCI devices and placement freed, its old flavor, placement and status its own again."""
    source = source_node_id(instance)
    if source is None:
        return
    if instance.node_id is not None and instance.node_id != source:
        _release_node(session, instance, instance.node_id, instance.vcpus, instance.ram)
    resize.restore_old(session, instance)
    instance.node_id = source


def _release_node(session: Session, instance: Instance, node_id: str, vcpus: int, ram: int) -> None:
    """Give one of the migrating instance's two nodes back what the instance holds there."""
    node = session.get_one(Node, node_id)
    scheduler.release(session, node.id, scheduler.Demand(node_type=node.node_type, vcpus=vcpus, ram=ram))
    pci.release_on_node(session, instance.id, node.id)
