"""Helpers shared by the instance workflows."""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.agent_client import AgentCallFailed, AgentClient
from dpustack.controller.orchestrator import StepContext
from dpustack.db.models import Instance, Node, Port, Volume


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


def call_agent(ctx: StepContext, action: Callable[[AgentClient, Instance], dict[str, Any]]) -> dict[str, Any]:
    """Call the instance's agent; its step log becomes this step's substeps."""
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        node = node_of(session, instance)
    with ctx.runtime.agent(node) as agent:
        try:
            result = action(agent, instance)
        except AgentCallFailed as exc:
            ctx.detail["substeps"] = exc.substeps
            raise
    ctx.detail["node"] = node.hostname
    if result.get("steps"):
        ctx.detail["substeps"] = result["steps"]
    return result


def record_fault(ctx: StepContext, step: str, message: str) -> None:
    """Leave the instance in ERROR with a fault a user can read."""
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        instance.status = "ERROR"
        instance.fault = {"message": message, "step": step, "operation_id": ctx.operation_id}


def volume_spec(volume: Volume, ctx: StepContext) -> dict[str, Any]:
    return {"volume_id": volume.id, "uri": ctx.runtime.volume_backend.uri(volume.id),
            "bootable": volume.bootable}


def nic_profile(agent_instance: dict[str, Any], port_id: str) -> dict[str, Any]:
    """The `binding:profile` of a plugged port: which function carries it on the node."""
    for nic in agent_instance.get("nics", []):
        if nic.get("port_id") == port_id:
            return {key: nic[key] for key in ("function_id", "bdf", "representor") if key in nic}
    return {}
