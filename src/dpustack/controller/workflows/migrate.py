"""migrate and migrate_revert: an instance leaves one node and is built on another, on the same ports and volumes.

The claims were made when the API accepted the migration (`services.migration`). Both operations take the
same walk (the seed's order), from the node the instance leaves to the node it arrives on: a migration from
its source to the target, a revert back from the target to the source.

1. ``stop_on_<leaving>``: the leaving node stops the instance (a running one: by its power button, then the
   plug, as a stop). Undo: started again there if it ran; a node that cannot be reached leaves it as it is
   (stopped or not, its reports say which once it is back) rather than fail the undo.
2. ``build_on_<arriving>``: every volume gets a second attachment, exported for the arriving node while the
   leaving node's is still there (`volumes.move_attachment_id`: only while the instance moves, and only once
   the leaving node said it is off); the arriving node builds the instance with its flavor, NUMA placement
   and PCI devices there, the same ports (MACs, addresses) and these volumes, left off if it was off. Undo:
   the arriving node deletes it and the second attachments end; a build that never reached the node (its
   agent refused the connection) has nothing to undo there; one that may have reached it waits for the node
   to answer again (the undo retries, bounded by `step_retry_seconds`), so nothing is left there.
3. ``bind_ports_on_<arriving>``: each port's binding (host, profile) moves to the arriving node; the network
   backend is told. Undo: the binding it had.
4. ``clean_up_<leaving>``: the leaving node deletes its functions for the instance (NICs, then volumes: the
   DPU lets go of them) and forgets it; the cloud's ports and volumes stay. Undo: the leaving node finishes
   that delete, then builds the instance there again (off; the stop's undo starts it), on the volumes' first
   attachments, still exported.
5. ``finish_migrate`` / ``finish_revert``: each volume's first attachment ends and the second is its
   attachment; a migration waits in VERIFY_MIGRATE, a revert gives the instance its source, old flavor and
   status back and frees the target's claims. The step's detail has the move's duration and its downtime
   (from the leaving node's stop to the arriving node's start; none for an instance that was off).

A migration has a first step, ``claim_target``, which shows what the API claimed; its undo frees it (the
instance's record is on its source again). So a failure at any step leaves the instance on the node it
was on, in the status it had, with nothing left on the other node; a failed revert leaves it in
VERIFY_MIGRATE. An undo that fails leaves the instance in ERROR with a fault, its claims held.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy.orm import Session

from dpustack.contract.instances import BuildRequest, InstanceResult, PciAssignment
from dpustack.controller.agent_client import AgentClient
from dpustack.controller.orchestrator import Step, StepContext, readable, register
from dpustack.controller.services import migration, networks, pci, resize, volumes
from dpustack.controller.workflows.common import (call_agent, instance_of, nic_profile, nic_request, ports_of,
                                                  remember_agent_instance, settle_failure, volumes_of)
from dpustack.db.models import Instance, Node, Volume
from dpustack.errors import NodeUnreachable
from dpustack.instance_states import STATUS_AFTER, InstanceStatus

MIGRATE, REVERT = "migrate", "revert"
#: ctx.data: the build on the arriving node, or the clean-up on the leaving one, never reached its agent
UNTOUCHED = "untouched"


def ends(session: Session, ctx: StepContext, which: str) -> tuple[Node, Node]:
    """(leaving, arriving): the nodes of this walk."""
    instance = instance_of(session, ctx)
    source = session.get_one(Node, migration.source_node_id(instance))
    target = session.get_one(Node, instance.node_id)
    return (source, target) if which == MIGRATE else (target, source)


def _was_on(session: Session, ctx: StepContext) -> bool:
    """Whether the instance ran before its migration (and so runs after it, and after a revert)."""
    return (instance_of(session, ctx).resize_from or {}).get("status") == InstanceStatus.ACTIVE


def unreachable(exc: BaseException) -> bool:
    """A node that cannot be reached (its agent died, or restarts): an undo that must reach it waits for it."""
    return isinstance(exc, NodeUnreachable)


def never_reached(exc: NodeUnreachable) -> bool:
    """Whether the call did not reach the agent at all (the connection was refused), so it did nothing."""
    return isinstance(exc.__cause__, httpx.ConnectError)


def build_request(session: Session, instance: Instance, node: Node, uris: dict[str, str],
                  power: str) -> BuildRequest:
    """The build of the instance on `node`: that side's flavor, placement and PCI devices, its ports and these
    volumes' URIs; on the source, its functions where they were (`bdfs`)."""
    new, old = resize.flavor_specs(instance)
    back = node.id == migration.source_node_id(instance)
    flavor, placement = old if back else new
    devices = pci.allocated_to(session, instance.id, node_id=node.id)
    return BuildRequest.model_validate({
        "uuid": instance.id, "name": instance.name, "image": instance.image_id,
        "user_data": instance.user_data or None, "flavor": flavor.model_dump(), "numa_placement": placement,
        "networks": [nic_request(p).model_dump() for p in ports_of(session, instance.id)],
        "volumes": [{"volume_id": v.id, "uri": uris[v.id], "bootable": v.bootable}
                    for v in volumes_of(session, instance.id)],
        "pci_devices": [PciAssignment(address=d.address, request_id=d.request_id).model_dump() for d in devices],
        "power": power, "bdfs": (instance.resize_from or {}).get("bdfs", {}) if back else {}})


def _build_on(ctx: StepContext, node_id: str, uris: dict[str, str], power: str) -> InstanceResult:
    """Have node `node_id` build the instance on these volume URIs, `power` after."""
    def build(agent: AgentClient, instance: Instance) -> InstanceResult:
        with ctx.transaction() as session:
            request = build_request(session, instance_of(session, ctx), session.get_one(Node, node_id), uris, power)
        return agent.build(request)
    return call_agent(ctx, build, node_id=node_id)


# -- the steps --------------------------------------------------------------------
def claim_target(ctx: StepContext) -> None:
    """What the API claimed, shown; the move's clock starts."""
    ctx.data.setdefault("t0", time.time())
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        source, target = ends(session, ctx, MIGRATE)
        ctx.detail.update({"source": source.hostname, "target": target.hostname,
                           "flavor": instance.flavor.name if instance.flavor else None,
                           "old_flavor": (instance.resize_from or {}).get("flavor_name")})
        devices = pci.allocated_to(session, instance.id, node_id=target.id)
        if devices:
            ctx.detail["pci_devices"] = [d.address for d in devices]
        if instance.numa_placement:
            ctx.detail["numa_placement"] = instance.numa_placement


def unclaim_target(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        migration.back_to_source(session, instance_of(session, ctx))


def _stop(ctx: StepContext, which: str) -> None:
    ctx.data.setdefault("t0", time.time())
    with ctx.transaction() as session:
        leaving, _ = ends(session, ctx, which)
    result = call_agent(ctx, lambda agent, instance: agent.power(instance.id, "stop"), node_id=leaving.id)
    ctx.data["leave_power"] = result.instance.power_state
    ctx.data.setdefault("stopped_at", time.time())


def _restart(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        leaving, _ = ends(session, ctx, which)
        was_on = _was_on(session, ctx)
    ctx.data.pop("leave_power", None)
    if not was_on:
        return
    try:
        call_agent(ctx, lambda agent, instance: agent.power(instance.id, "start"), node_id=leaving.id)
    except NodeUnreachable as exc:  # left as it is there: its node's reports say whether it runs
        ctx.detail["not_restarted"] = readable(exc)


def _build_arriving(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        _, arriving = ends(session, ctx, which)
        power = "on" if _was_on(session, ctx) else "off"
        attachments = {v.id: volumes.move_attachment_id(v, instance, source_power=ctx.data.get("leave_power", "on"))
                       for v in volumes_of(session, instance.id)}
    uris = {volume_id: ctx.context.volume_backend.export(volume_id, attachment_id)
            for volume_id, attachment_id in attachments.items()}
    try:
        result = _build_on(ctx, arriving.id, uris, power)
    except NodeUnreachable as exc:
        ctx.data[UNTOUCHED] = never_reached(exc)
        raise
    remember_agent_instance(ctx, result)
    with ctx.transaction() as session:
        for out in result.instance.volumes:
            volumes.record_move_attachment(session.get_one(Volume, out.volume_id), node=arriving.hostname,
                                           function_id=out.function_id, bdf=out.bdf)
    ctx.data.setdefault("started_at", time.time())


def unbuild_arriving(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        _, arriving = ends(session, ctx, which)
    untouched = ctx.data.pop(UNTOUCHED, False)
    try:
        call_agent(ctx, lambda agent, instance: agent.delete_instance(instance.id), node_id=arriving.id)
    except NodeUnreachable:
        if not untouched:
            raise
    with ctx.transaction() as session:
        for volume in volumes_of(session, ctx.instance_id or ""):
            volumes.end_move_attachment(ctx.context.volume_backend, volume)
    ctx.data.pop("started_at", None)


def bind_arriving(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        _, arriving = ends(session, ctx, which)
        saved = ctx.data.setdefault("bindings", {})
        for port in ports_of(session, ctx.instance_id or ""):
            saved.setdefault(port.id, {"host": port.binding_host_id, "profile": dict(port.binding_profile or {}),
                                       "requested_chassis": port.requested_chassis})
            networks.bind_port(ctx.context.network, port, host=arriving.hostname, profile=nic_profile(ctx, port.id))
        ctx.detail["ports"] = sorted(saved)


def bind_back(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        saved = ctx.data.get("bindings", {})
        for port in ports_of(session, ctx.instance_id or ""):
            if (binding := saved.get(port.id)) is not None:
                networks.bind_port(ctx.context.network, port, host=binding["host"], profile=binding["profile"],
                                   requested_chassis=binding["requested_chassis"])


def _clean_up_leaving(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        leaving, _ = ends(session, ctx, which)
    try:
        call_agent(ctx, lambda agent, instance: agent.delete_instance(instance.id), node_id=leaving.id)
    except NodeUnreachable as exc:
        ctx.data[UNTOUCHED] = never_reached(exc)
        raise


def _restore_leaving(ctx: StepContext, which: str) -> None:
    """Undo of the clean-up: the leaving node finishes its delete and builds the instance again, off, on the
    volumes' first attachments (still exported: exporting again is idempotent)."""
    if ctx.data.pop(UNTOUCHED, False):
        return
    with ctx.transaction() as session:
        leaving, _ = ends(session, ctx, which)
        attachments = {v.id: volumes.attachment_of(v) for v in volumes_of(session, ctx.instance_id or "")}
    call_agent(ctx, lambda agent, instance: agent.delete_instance(instance.id), node_id=leaving.id)
    uris = {volume_id: ctx.context.volume_backend.export(volume_id, attachment_id)
            for volume_id, attachment_id in attachments.items()}
    result = _build_on(ctx, leaving.id, uris, "off")
    with ctx.transaction() as session:
        for out in result.instance.volumes:
            volumes.record_attachment(session.get_one(Volume, out.volume_id), node=leaving.hostname,
                                      function_id=out.function_id, bdf=out.bdf)
        saved = ctx.data.get("bindings", {})
        for nic in result.instance.nics:  # the ports go back to the functions the node has now
            if nic.port_id in saved:
                saved[nic.port_id]["profile"] = {"function_id": nic.function_id, "bdf": nic.bdf,
                                                 "representor": nic.representor}


def _finish(ctx: StepContext, which: str) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        leaving, arriving = ends(session, ctx, which)
        was_on = _was_on(session, ctx)
        for volume in volumes_of(session, instance.id):
            volumes.switch_to_move_attachment(ctx.context.volume_backend, volume)
        if which == MIGRATE:
            instance.status, instance.fault = STATUS_AFTER["migrate"], None
        else:
            migration.back_to_source(session, instance)
        now = time.time()
        ctx.detail.update(_timings(ctx.data, now, was_on))
        ctx.detail.update({"from": leaving.hostname, "to": arriving.hostname})


def _timings(data: dict[str, Any], now: float, was_on: bool) -> dict[str, Any]:
    """The move's duration and downtime, in ms (no downtime for an instance that was off)."""
    timings: dict[str, Any] = {"duration_ms": round((now - data.get("t0", now)) * 1000)}
    stopped, started = data.get("stopped_at"), data.get("started_at")
    timings["downtime_ms"] = round((started - stopped) * 1000) if was_on and stopped and started else None
    return timings


def _walk(which: str, leaving: str, arriving: str) -> list[Step]:
    """The steps from the leaving node (named `leaving`) to the arriving one."""
    def on(fn: Any) -> Any:
        return lambda ctx: fn(ctx, which)
    return [Step(f"stop_on_{leaving}", on(_stop), on(_restart)),
            Step(f"build_on_{arriving}", on(_build_arriving), on(unbuild_arriving), undo_retry=unreachable),
            Step(f"bind_ports_on_{arriving}", on(bind_arriving), on(bind_back)),
            Step(f"clean_up_{leaving}", on(_clean_up_leaving), on(_restore_leaving), undo_retry=unreachable),
            Step(f"finish_{which}", on(_finish))]


class Migrate:
    action = "migrate"
    rollback = True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("claim_target", claim_target, unclaim_target), *_walk(MIGRATE, "source", "target")]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """The undos put it back on its source as it was; ERROR with a fault if one of them failed."""
        settle_failure(ctx, step, message)


class RevertMigrate:
    action = "migrate_revert"
    rollback = True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return _walk(REVERT, "target", "source")

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """VERIFY_MIGRATE again, on the target, both nodes' claims held; ERROR with a fault if an undo failed."""
        settle_failure(ctx, step, message, status=InstanceStatus.VERIFY_MIGRATE)


register(Migrate())
register(RevertMigrate())
