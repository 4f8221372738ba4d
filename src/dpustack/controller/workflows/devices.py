"""Add and remove NICs and volumes on a running instance, each through the node's agent."""

from __future__ import annotations

from typing import Any

from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.services import networks
from dpustack.controller.services.common import MEMBER, Caller
from dpustack.controller.services.volume_states import VolumeStatus
from dpustack.controller.workflows.common import (call_agent, export_volumes, instance_of, nic_profile, nic_request,
                                                  node_of, record_attachments, record_fault, remember_agent_instance,
                                                  unexport_volumes, volume_request)
from dpustack.db.models import Network, Port, Volume


def _port(ctx: StepContext, session: Any) -> Port:
    return session.get_one(Port, ctx.data["port_id"])


# -- add_nic --------------------------------------------------------------------
def _allocate_port(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        if "port_id" in ctx.data:
            return  # done before a crash
        instance = instance_of(session, ctx)
        if ctx.params.get("port_id"):
            port = session.get_one(Port, ctx.params["port_id"])
        else:
            owner = Caller(project_id=ctx.project_id, project_name="", role=MEMBER, token_id="")
            network = session.get_one(Network, ctx.params["network_id"])
            index = len(networks.list_ports(session, owner, instance_id=instance.id))
            port = networks.create_port(session, owner, ctx.context.network, network,
                                        name=f"{instance.name}-nic{index}",
                                        auto_delete=True, security_group_refs=ctx.params.get("security_groups"))
        port.instance_id = instance.id
        ctx.data["port_id"] = port.id
        ctx.detail["port"] = port.id


def _free_port(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        if "port_id" not in ctx.data:
            return
        port = _port(ctx, session)
        if port.auto_delete:
            networks.remove_port(session, ctx.context.network, port)
        else:
            networks.unbind_port(ctx.context.network, port)
            port.instance_id = None


def _plug(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        nic = nic_request(_port(ctx, session))
    remember_agent_instance(ctx, call_agent(ctx, lambda agent, instance: agent.add_nic(instance.id, nic)))


def _unplug(ctx: StepContext) -> None:
    port_id = ctx.data.get("port_id") or ctx.params["port_id"]
    call_agent(ctx, lambda agent, instance: agent.remove_nic(instance.id, port_id))


def _bind(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        networks.bind_port(ctx.context.network, _port(ctx, session), host=node_of(session, instance).hostname,
                           profile=nic_profile(ctx, ctx.data["port_id"]))


def _unbind(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        networks.unbind_port(ctx.context.network, _port(ctx, session))


class AddNic:
    action, rollback = "add_nic", True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("allocate_port", _allocate_port, _free_port),
                Step("plug_on_node", _plug, _unplug),
                Step("bind_port", _bind, _unbind)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


# -- remove_nic -----------------------------------------------------------------
def _unplug_requested(ctx: StepContext) -> None:
    ctx.data.setdefault("port_id", ctx.params["port_id"])
    _unplug(ctx)


def _replug(ctx: StepContext) -> None:
    _plug(ctx)
    _bind(ctx)


class RemoveNic:
    action, rollback = "remove_nic", True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("unplug_on_node", _unplug_requested, _replug),
                Step("release_port", _free_port)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


# -- volumes --------------------------------------------------------------------
def _volume(ctx: StepContext, session: Any) -> Volume:
    return session.get_one(Volume, ctx.params["volume_id"])


def _reserve(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        volume = _volume(ctx, session)
        volume.status, volume.instance_id = VolumeStatus.ATTACHING, ctx.instance_id


def _release(ctx: StepContext) -> None:
    """The volume's export ends (the node no longer has it) and the volume is free again."""
    unexport_volumes(ctx, [ctx.params["volume_id"]])
    with ctx.transaction() as session:
        volume = _volume(ctx, session)
        volume.status, volume.instance_id = VolumeStatus.AVAILABLE, None


def _attach(ctx: StepContext) -> None:
    """Export the volume for this attachment, have the agent attach it, record where it is attached."""
    volume_id = ctx.params["volume_id"]
    uri = export_volumes(ctx, [volume_id])[volume_id]
    with ctx.transaction() as session:
        request = volume_request(_volume(ctx, session), uri)
    result = call_agent(ctx, lambda agent, instance: agent.add_volume(instance.id, request))
    record_attachments(ctx, result.instance, [volume_id])


def _detach(ctx: StepContext) -> None:
    volume_id = ctx.params["volume_id"]
    call_agent(ctx, lambda agent, instance: agent.remove_volume(instance.id, volume_id))


class AddVolume:
    action, rollback = "add_volume", True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("reserve_volume", _reserve, _release),
                Step("attach_on_node", _attach, _detach)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


class RemoveVolume:
    action, rollback = "remove_volume", True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("detach_on_node", _detach, _attach),
                Step("release_volume", _release)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


for _workflow in (AddNic(), RemoveNic(), AddVolume(), RemoveVolume()):
    register(_workflow)
