"""Helpers shared by the instance workflows."""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.contract.instances import InstanceOut, InstanceResult, NicRequest, NicVf, StepLog, VolumeRequest
from dpustack.controller.agent_client import AgentCallFailed, AgentClient
from dpustack.controller.orchestrator import StepContext
from dpustack.controller.services import volumes
from dpustack.db.models import Instance, Node, OperationStep, Port, Volume
from dpustack.errors import DriverError
from dpustack.instance_states import InstanceStatus


def instance_of(session: Session, ctx: StepContext) -> Instance:
    return session.get_one(Instance, ctx.instance_id)


def node_of(session: Session, instance: Instance) -> Node:
    if instance.node_id is None:
        raise RuntimeError(f"instance {instance.id} has no node")
    return session.get_one(Node, instance.node_id)


def ports_of(session: Session, instance_id: str) -> list[Port]:
    return list(session.scalars(select(Port).where(Port.instance_id == instance_id)
                                .order_by(Port.created_at)))


def volumes_of(session: Session, instance_id: str) -> list[Volume]:
    return list(session.scalars(select(Volume).where(Volume.instance_id == instance_id)
                                .order_by(Volume.bootable.desc(), Volume.created_at)))


class _Logged(Protocol):
    @property
    def steps(self) -> list[StepLog]: ...


Answer = TypeVar("Answer", bound=_Logged)


def call_agent(ctx: StepContext, action: Callable[[AgentClient, Instance], Answer], *,
               node_id: str | None = None) -> Answer:
    """Call the instance's agent (or the agent of node `node_id`: a migration's other node); its step log
    becomes this step's substeps."""
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        node = session.get_one(Node, node_id) if node_id else node_of(session, instance)
    with ctx.context.agent(node) as agent:
        try:
            result = action(agent, instance)
        except AgentCallFailed as exc:
            ctx.detail["substeps"] = _substeps(exc.substeps)
            raise
    ctx.detail["node"] = node.hostname
    if result.steps:
        ctx.detail["substeps"] = _substeps(result.steps)
    return result


def _substeps(steps: list[StepLog]) -> list[dict[str, Any]]:
    return [step.model_dump(mode="json") for step in steps]


def any_undo_failed(ctx: StepContext) -> bool:
    """Whether the undo of one of this operation's steps failed."""
    with ctx.transaction() as session:
        return session.scalars(select(OperationStep.id).where(OperationStep.operation_id == ctx.operation_id,
                                                              OperationStep.status == "undo_failed")).first() \
            is not None


def record_fault(ctx: StepContext, step: str, message: str) -> None:
    """Leave the instance in ERROR with a fault a user can read."""
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        instance.status = InstanceStatus.ERROR
        instance.fault = {"message": message, "step": step, "operation_id": ctx.operation_id}


def settle_failure(ctx: StepContext, step: str, message: str, *,
                   restore: Callable[[Session, Instance], None] | None = None, status: str | None = None,
                   node_undo_failed: bool = False) -> None:
    """The `on_failure` of an operation whose steps were undone: the instance in ERROR with a fault if an undo
    failed (in the controller, or on the node: `node_undo_failed`); else its record put back by `restore`
    and its status `status`, where given."""
    if node_undo_failed or any_undo_failed(ctx):
        record_fault(ctx, step, message)
        return
    if restore is None and status is None:
        return
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        if restore is not None:
            restore(session, instance)
        if status is not None:
            instance.status = status


def nic_request(port: Port, vf: NicVf | None = None) -> NicRequest:
    """What the agent needs to plug a port into the instance's host (a VM's remote-managed NIC: with its VF)."""
    return NicRequest(port_id=port.id, mac=port.mac_address, network_id=port.network_id, qos_pps=port.qos_pps,
                      vf=vf)


def volume_request(volume: Volume, uri: str) -> VolumeRequest:
    """What the agent needs to attach a volume to the instance's host: where the backend serves it."""
    return VolumeRequest(volume_id=volume.id, uri=uri, bootable=volume.bootable)


def export_volumes(ctx: StepContext, volume_ids: list[str]) -> dict[str, str]:
    """Have the volume backend serve each volume for its attachment; the URIs, by volume id.

    The attachment ids (the exports' names) are recorded before the backend is asked, so an undo or a
    resumed step finds every export that may exist; exporting again is idempotent.
    """
    with ctx.transaction() as session:
        attachments = {volume_id: volumes.attachment_of(session.get_one(Volume, volume_id))
                       for volume_id in volume_ids}
    return {volume_id: ctx.context.volume_backend.export(volume_id, attachment_id)
            for volume_id, attachment_id in attachments.items()}


def record_attachments(ctx: StepContext, answer: InstanceOut, volume_ids: list[str]) -> None:
    """The agent attached these volumes: record node, storage function and BDF; they are in use."""
    attached = {out.volume_id: out for out in answer.volumes}
    with ctx.transaction() as session:
        node = node_of(session, instance_of(session, ctx)).hostname
        for volume_id in volume_ids:
            if (out := attached.get(volume_id)) is None:
                raise DriverError(f"node {node} answered without volume {volume_id}, which it was asked to attach")
            volumes.record_attachment(session.get_one(Volume, volume_id), node=node, function_id=out.function_id,
                                      bdf=out.bdf)


def unexport_volumes(ctx: StepContext, volume_ids: list[str]) -> None:
    """Stop serving the volumes' attachments (once the node let go of them)."""
    with ctx.transaction() as session:
        for volume_id in volume_ids:
            if (volume := session.get(Volume, volume_id)) is not None:
                volumes.end_attachment(ctx.context.volume_backend, volume)


def remember_agent_instance(ctx: StepContext, result: InstanceResult) -> None:
    """Keep the agent's view of the instance, in the operation's data, for the steps after this one."""
    ctx.data["agent_instance"] = result.instance.model_dump(mode="json")


def nic_profile(ctx: StepContext, port_id: str) -> dict[str, Any]:
    """The `binding:profile` of a plugged port: which function carries it on the node, as the agent
    last said (`remember_agent_instance`); empty if it did not say."""
    remembered = ctx.data.get("agent_instance")
    nic = InstanceOut.model_validate(remembered).nic(port_id) if remembered else None
    if nic is None:
        return {}
    return {"function_id": nic.function_id, "bdf": nic.bdf, "representor": nic.representor}
