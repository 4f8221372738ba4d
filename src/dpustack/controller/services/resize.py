"""Resize of a VM on its own node, as Nova's resize to the same host: both flavors held until confirm or revert.

`start_resize` checks the request, then claims the new flavor's CPU, RAM and NUMA placement on the
instance's node beside what the instance holds already, in the request's transaction: the node row's
conditional UPDATE first (a concurrent claim on the node waits for it, as a scheduling claim does), then the
NUMA fit read afresh, counting every placement on the node, the instance's own too. So a create that
comes at the same time cannot take the room, and a flavor that does not fit there is a 409 saying why
(a move to another node with that flavor is a cold migration, `server migrate --flavor`). The instance then
holds the new flavor; `resize_from` holds what it had (flavor, vcpus, ram, disk, placement) and the status
to go back to, and the old claims count until `confirm_resize` frees them (no call to the node: it runs the
new flavor already). A revert (`start_revert`, the operation `resize_revert`) and a failed resize end in
`back_to_old`, which frees the new flavor's claims and gives the instance its old flavor again. A smaller disk than the old flavor's is
refused: the boot volume is never shrunk, and a larger one does not grow it (`volume extend` does).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.contract.instances import FlavorSpec
from dpustack.contract.numa import NumaPlacement
from dpustack.controller import orchestrator, scheduler
from dpustack.controller.numa_fit import DoesNotFit, NumaRequest, fit
from dpustack.controller.services import flavors, instances, numa
from dpustack.controller.services.common import Caller
from dpustack.db.models import Flavor, Instance, Node, Operation
from dpustack.errors import Conflict
from dpustack.pci.requests import EXTRA_SPEC

#: what a refusal of a flavor that does not fit adds: the later way out
_NO_MIGRATION = "to move it to another node with that flavor, migrate it (POST /v1/instances/{ref}/migrate)"


def start_resize(session: Session, caller: Caller, ref: str, flavor_ref: str) -> Operation:
    """Claim `flavor` for the VM on its node and start the operation `resize`; 404 naming `flavor` for one
    that does not exist, 400 naming its extra spec for one the NUMA fit cannot read, 409 for a bare-metal
    instance, a flavor of another type, the same flavor, a smaller disk, other PCI devices, a status other
    than ACTIVE or SHUTOFF, and a flavor that does not fit on the node."""
    instance = instances.get_instance(session, caller, ref)
    instances.check_vm(instance, "resize")
    flavor = flavors.get_flavor(session, flavor_ref)
    old = instance.flavor
    _check_flavor(instance, old, flavor)
    request = numa.check_specs(flavor, flavor.extra_specs or {}, field_prefix="flavor.")
    status = instance.status
    operation = instances.start_action(session, caller, ref, "resize", {"flavor_id": flavor.id})
    node = session.get_one(Node, instance.node_id)
    placement = _claim(session, node, instance, flavor, request)
    instance.resize_from = old_context(instance, status)
    instance.flavor_id, instance.vcpus, instance.ram = flavor.id, flavor.vcpus, flavor.ram
    instance.numa_placement = placement.model_dump(mode="json")
    return operation


def old_context(instance: Instance, status: str) -> dict[str, Any]:
    """What `resize_from` keeps of the instance before a resize or a migration changes it: its flavor (id,
    name, vcpus, ram, disk), its NUMA placement and `status`, the status to go back to."""
    old = instance.flavor
    return {"flavor_id": instance.flavor_id, "flavor_name": old.name if old else None, "vcpus": instance.vcpus,
            "ram": instance.ram, "disk": old.disk if old else 0, "numa_placement": instance.numa_placement,
            "status": status}


def _check_flavor(instance: Instance, old: Flavor | None, flavor: Flavor) -> None:
    if flavor.type != "vm":
        raise Conflict(f"flavor '{flavor.name}' is a {flavor.type} flavor: a VM is resized to a vm flavor",
                       field="flavor")
    if flavor.id == instance.flavor_id:
        raise Conflict(f"instance '{instance.name}' has flavor '{flavor.name}' already", field="flavor")
    if old is None:
        return
    if flavor.disk < old.disk:
        raise Conflict(f"flavor '{flavor.name}' has a smaller disk ({flavor.disk} GiB) than '{old.name}' "
                       f"({old.disk} GiB): a boot volume is not shrunk", field="flavor")
    if (flavor.extra_specs or {}).get(EXTRA_SPEC) != (old.extra_specs or {}).get(EXTRA_SPEC):
        raise Conflict(f"flavor '{flavor.name}' asks other PCI devices ({EXTRA_SPEC}) than '{old.name}': a resize "
                       "keeps the VM's devices", field="flavor")


def _claim(session: Session, node: Node, instance: Instance, flavor: Flavor,
           request: NumaRequest) -> NumaPlacement:
    """The new flavor's CPU, RAM and NUMA placement claimed on `node` beside what is held there, the
    instance's own old ones too; 409 naming `flavor` with the reason if it does not fit."""
    where = f"flavor '{flavor.name}' does not fit on node {node.hostname}, where '{instance.name}' runs"
    if not scheduler.claim_more(session, node.id, flavor.vcpus, flavor.ram):
        session.refresh(node)
        raise Conflict(f"{where}: it needs {flavor.vcpus} CPU / {flavor.ram} MiB beside the {instance.vcpus} CPU / "
                       f"{instance.ram} MiB the VM holds until its resize is confirmed, and the node has "
                       f"{node.total_cpu - node.claimed_cpu} CPU / {node.total_mem - node.claimed_mem} MiB free; "
                       f"{_NO_MIGRATION}", field="flavor")
    cells = numa.parse_cells(session.execute(select(Node.numa_cells).where(Node.id == node.id)).scalar_one())
    held = numa.placements_by_node(session, [node.id]).get(node.id, [])
    try:
        if not cells:
            raise DoesNotFit("the node reports no NUMA cells")
        return fit(request, cells, held)
    except DoesNotFit as exc:
        raise Conflict(f"{where}: its NUMA cells cannot hold it beside the VM's current placement, held until "
                       f"its resize is confirmed: {exc.message}; {_NO_MIGRATION}", field="flavor") from exc


def confirm_resize(session: Session, caller: Caller, ref: str) -> Instance:
    """Keep the new flavor: free the old flavor's CPU, RAM and placement on the node; the instance is ACTIVE
    or SHUTOFF again, as before its resize. Nothing runs on the node. 409 naming `instance` but in
    VERIFY_RESIZE, and while an operation holds it (a revert)."""
    instance = instances.get_instance(session, caller, ref)
    instances.check_allowed(instance, "resize_confirm")
    orchestrator.lock_instance(session, instance, "resize_confirm")  # no revert meanwhile; read again
    instances.check_allowed(instance, "resize_confirm")
    old = instance.resize_from or {}
    scheduler.release_some(session, instance.node_id or "", old["vcpus"], old["ram"])
    instance.status, instance.resize_from, instance.task_state = old["status"], None, None
    return instance


def start_revert(session: Session, caller: Caller, ref: str) -> Operation:
    """Start the operation `resize_revert`, which defines the VM again with its old flavor; 409 naming
    `instance` but in VERIFY_RESIZE."""
    return instances.start_action(session, caller, ref, "resize_revert")


def back_to_old(session: Session, instance: Instance) -> None:
    """The instance's old flavor again (a revert, or a resize that failed): the new flavor's CPU and RAM freed
    on the node, its old ones and its old placement its own again, its status as before the resize."""
    old = instance.resize_from
    if not old:
        return
    if instance.node_id is not None:
        scheduler.release_some(session, instance.node_id, instance.vcpus, instance.ram)
    restore_old(session, instance)


def restore_old(session: Session, instance: Instance) -> None:
    """Give the instance what `resize_from` kept (its flavor, vCPUs, RAM, placement and status) and end the
    context; the caller freed the new claims."""
    old = instance.resize_from or {}
    exists = old["flavor_id"] and session.get(Flavor, old["flavor_id"]) is not None
    instance.flavor_id = old["flavor_id"] if exists else None
    instance.vcpus, instance.ram, instance.numa_placement = old["vcpus"], old["ram"], old["numa_placement"]
    instance.status, instance.resize_from = old["status"], None


def flavor_specs(instance: Instance) -> tuple[tuple[FlavorSpec, Any], tuple[FlavorSpec, Any]]:
    """(new, old): each flavor of a resizing instance as its node is given it, with its placement."""
    old = instance.resize_from or {}
    flavor = instance.flavor
    new_spec = FlavorSpec(name=flavor.name if flavor else "unknown", vcpus=instance.vcpus, ram=instance.ram,
                          disk=flavor.disk if flavor else 0)
    old_spec = FlavorSpec(name=old.get("flavor_name") or "unknown", vcpus=old["vcpus"], ram=old["ram"],
                          disk=old.get("disk", 0))
    return (new_spec, instance.numa_placement), (old_spec, old.get("numa_placement"))
