"""live_migrate: a running VM moves to another vm node while its guest runs on (docs/migration.md).

The claims were made when the API accepted it (`services.migration.start_migrate`, `live`), as for a cold
migration. Then:

1. ``claim_target``: what was claimed, shown (the cold migration's step). Undo: the target's claims freed.
2. ``build_on_target``: every volume gets a second attachment, exported for the target while the source's
   still serves the running guest; the target's DPU makes the instance's storage functions on it and its net
   functions (representors plugged into its switch with the port ids); its agent answers the domain XML the
   guest arrives as (its storage in the slots the source has them) and where its hypervisor is reached
   (its ``migration_uri``). Undo: the target deletes what it made, the second attachments end.
3. ``prepare_on_source``: the source unplugs the NICs from the guest (the network gap starts). Undo: they
   are plugged back where they were.
4. ``migrate_live``: the source's hypervisor moves the guest to the target's (the switch-over); abort
   (`services.migration.abort_live`) reaches it while it runs. A failed, aborted or timed-out migration
   leaves the guest running on the source, so the undos above put everything back. A source that cannot
   be reached is asked again (the step waits): its agent answers a migration asked again by joining the
   one in flight or, once done, saying so (`agent.live_moves`), so a resumed step never moves the guest
   twice; one still unreachable at the end fails the undo (where the guest runs is not known): ERROR.
   Once it succeeded it cannot be undone.
5. ``bind_ports_on_target``: each port's binding (host, profile) moves to the target's function.
6. ``receive_on_target``: the target plugs the NICs in, each in its old slot, and records the instance (the
   network gap ends once the guest brings them up).
7. ``clean_up_source``: the source deletes its functions for the instance and forgets it (its domain left
   with the migration).
8. ``finish_migrate``: each volume's first attachment ends; the source's claims are freed and the instance
   is ACTIVE on the target: no confirm (as Nova's live migration). The detail has ``duration_ms`` (the
   whole operation), ``migration_ms`` and ``downtime_ms`` (the hypervisor's: the call, and the guest's pause
   at the switch-over) and ``nic_gap_ms`` (from the unplug to the plug on the target).

Steps 5-8 go forward only (the guest runs on the target): each is idempotent, and a node that cannot be
reached or an agent call that fails is tried again (the step ``waiting``, `Step.retry`) until it answers;
only a failure that lasts (`step_retry_seconds`) leaves the instance in ERROR on the target, the fault
saying where its guest runs, the claims of both nodes held (delete it).
"""

from __future__ import annotations

import time
from typing import Any

from dpustack.contract.live_migration import IncomingRequest, LiveMigrateRequest, ReceiveRequest
from dpustack.controller.orchestrator import Step, StepContext, readable, register
from dpustack.controller.services import migration, volumes
from dpustack.controller.workflows.common import (call_agent, instance_of, remember_agent_instance, settle_failure,
                                                  volumes_of)
from dpustack.controller.workflows.migrate import (MIGRATE, UNTOUCHED, bind_arriving, build_request, claim_target,
                                                   ends, never_reached, unbuild_arriving, unclaim_target,
                                                   unreachable)
from dpustack.db.models import Node, Volume
from dpustack.errors import Conflict, DpustackError, NodeUnreachable

#: ctx.data: the guest runs on the target (the switch-over happened)
_SWITCHED = "switched"
#: ctx.data: the last migrate-live call did not reach the source's agent or got no answer (did it switch?)
_UNANSWERED = "unanswered"


def _not_for_good(exc: BaseException) -> bool:
    """A node that cannot be reached or an agent (or backend) call that failed: tried again. Not a refusal
    of the controller's own (4xx) nor a bug."""
    return isinstance(exc, DpustackError) and exc.status >= 500


def _build_on_target(ctx: StepContext) -> None:
    ctx.data.setdefault("t0", time.time())
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        source, target = ends(session, ctx, MIGRATE)
        attachments = {v.id: volumes.move_attachment_id(v, instance, source_power="on", live=True)
                       for v in volumes_of(session, instance.id)}
    uris = {volume_id: ctx.context.volume_backend.export(volume_id, attachment_id)
            for volume_id, attachment_id in attachments.items()}
    with ctx.context.agent(source) as agent:
        slots = agent.instance(ctx.instance_id or "").slots
    with ctx.transaction() as session:
        request = build_request(session, instance_of(session, ctx), target, uris, "on")
    try:
        out = call_agent(ctx, lambda agent, _: agent.incoming(request.uuid, IncomingRequest(
            request=request, slots=slots)), node_id=target.id)
    except NodeUnreachable as exc:
        ctx.data[UNTOUCHED] = never_reached(exc)
        raise
    ctx.data.update({"xml": out.xml, "uri": out.uri, "slots": slots, "uris": uris,
                     "agent_instance": out.instance.model_dump(mode="json")})
    ctx.detail["migration_uri"] = out.uri
    with ctx.transaction() as session:
        for made in out.instance.volumes:
            volumes.record_move_attachment(session.get_one(Volume, made.volume_id), node=target.hostname,
                                           function_id=made.function_id, bdf=made.bdf)


def _unbuild_target(ctx: StepContext) -> None:
    unbuild_arriving(ctx, MIGRATE)


def _source(ctx: StepContext) -> Node:
    with ctx.transaction() as session:
        return ends(session, ctx, MIGRATE)[0]


def _prepare_on_source(ctx: StepContext) -> None:
    ctx.data.setdefault("unplugged_at", time.time())
    call_agent(ctx, lambda agent, instance: agent.migrate_prepare(instance.id), node_id=_source(ctx).id)


def _restore_on_source(ctx: StepContext) -> None:
    ctx.data.pop("unplugged_at", None)
    try:
        call_agent(ctx, lambda agent, instance: agent.migrate_restore(instance.id), node_id=_source(ctx).id)
    except NodeUnreachable as exc:  # left as it is: its NICs are plugged back once it is asked again
        ctx.detail["not_restored"] = readable(exc)


def _migrate_live(ctx: StepContext) -> None:
    source = _source(ctx)
    request = LiveMigrateRequest(uri=ctx.data["uri"], xml=ctx.data["xml"])
    try:
        with ctx.context.agent(source) as agent:
            result = agent.migrate_live(ctx.instance_id or "", request)
    except NodeUnreachable:
        ctx.data[_UNANSWERED] = source.hostname
        raise
    ctx.data.pop(_UNANSWERED, None)
    ctx.data[_SWITCHED] = True
    ctx.data["migration_ms"] = None if result.duration_s is None else round(result.duration_s * 1000)
    ctx.data["downtime_ms"] = result.downtime_ms
    ctx.detail.update({"migration_ms": ctx.data["migration_ms"], "downtime_ms": result.downtime_ms,
                       "data_total": result.data_total, "to": ctx.data["uri"]})


def _after_switch_over(ctx: StepContext) -> None:
    """A migration that failed or was aborted left the guest on the source: nothing to undo. One that
    succeeded cannot be undone, nor one whose source never answered: the undo fails, saying where the guest
    runs (or may run)."""
    with ctx.transaction() as session:
        source, target = ends(session, ctx, MIGRATE)
    if ctx.data.get(_SWITCHED):
        raise Conflict(f"the guest runs on {target.hostname} (the target) since the switch-over; it is not "
                       "moved back", field="instance")
    if ctx.data.get(_UNANSWERED):
        raise Conflict(f"node {source.hostname} did not answer whether the guest moved: it runs on "
                       f"{source.hostname} or on {target.hostname}; nothing is undone", field="instance")


def _bind_on_target(ctx: StepContext) -> None:
    bind_arriving(ctx, MIGRATE)


def _receive_on_target(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        _, target = ends(session, ctx, MIGRATE)
        request = build_request(session, instance, target, ctx.data["uris"], "on")
    result = call_agent(ctx, lambda agent, _: agent.receive(request.uuid, ReceiveRequest(
        request=request, slots=ctx.data["slots"])), node_id=target.id)
    remember_agent_instance(ctx, result)
    ctx.data.setdefault("plugged_at", time.time())


def _clean_up_source(ctx: StepContext) -> None:
    call_agent(ctx, lambda agent, instance: agent.delete_instance(instance.id), node_id=_source(ctx).id)


def _finish(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        if not instance.resize_from:  # finished before the controller died
            return
        source, target = ends(session, ctx, MIGRATE)
        for volume in volumes_of(session, instance.id):
            volumes.switch_to_move_attachment(ctx.context.volume_backend, volume)
        migration.finish_live(session, instance)
        ctx.detail.update(_timings(ctx.data, time.time()))
        ctx.detail.update({"from": source.hostname, "to": target.hostname})


def _timings(data: dict[str, Any], now: float) -> dict[str, Any]:
    """The operation's duration, the hypervisor's migration time and downtime, and the NIC gap, in ms."""
    unplugged, plugged = data.get("unplugged_at"), data.get("plugged_at")
    return {"duration_ms": round((now - data.get("t0", now)) * 1000), "migration_ms": data.get("migration_ms"),
            "downtime_ms": data.get("downtime_ms"),
            "nic_gap_ms": round((plugged - unplugged) * 1000) if unplugged and plugged else None}


class LiveMigrate:
    action = "live_migrate"
    rollback = True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("claim_target", claim_target, unclaim_target),
                Step("build_on_target", _build_on_target, _unbuild_target, undo_retry=unreachable),
                Step("prepare_on_source", _prepare_on_source, _restore_on_source),
                Step("migrate_live", _migrate_live, _after_switch_over, retry=unreachable),
                Step("bind_ports_on_target", _bind_on_target, retry=_not_for_good),
                Step("receive_on_target", _receive_on_target, retry=_not_for_good),
                Step("clean_up_source", _clean_up_source, retry=_not_for_good),
                Step("finish_migrate", _finish, retry=_not_for_good)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """Before the switch-over the undos put it back on its source, running; after it (an undo fails) or
        when an undo failed: ERROR with a fault."""
        settle_failure(ctx, step, message)


register(LiveMigrate())
