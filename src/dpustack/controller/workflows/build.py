"""Create and delete: the walk of a bare-metal build (DESIGN §4) and its reverse."""

from __future__ import annotations

import random
import time
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dpustack.contract.instances import BuildRequest, FlavorSpec, InstanceResult, NicVf, PciAssignment
from dpustack.controller import resource_requests, scheduler
from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.services import images, instances, networks, numa, pci, volumes
from dpustack.controller.workflows import pci_binding
from dpustack.controller.agent_client import AgentClient
from dpustack.controller.workflows.common import (call_agent, export_volumes, instance_of, nic_profile,
                                                  nic_request, node_of, ports_of, record_attachments, record_fault,
                                                  remember_agent_instance, unexport_volumes, volume_request,
                                                  volumes_of)
from dpustack.controller.services.common import MEMBER, Caller
from dpustack.controller.services.volume_states import VolumeStatus
from dpustack.controller.volumebackend import ImageSource
from dpustack.db.models import Flavor, Image, Instance, Network, Port, Volume
from dpustack.errors import Conflict, NotFound
from dpustack.instance_states import STATUS_AFTER


_SCHEDULE_ATTEMPTS = 5


def _demand(session: Session, instance: Any, flavor_type: str, params: dict[str, Any]) -> scheduler.Demand:
    return scheduler.Demand(node_type=flavor_type, vcpus=instance.vcpus, ram=instance.ram,
                            traits=frozenset(params.get("traits", [])),
                            resources=resource_requests.of_instance(session, instance.id, params))


# -- create -------------------------------------------------------------------
def _schedule(ctx: StepContext) -> None:
    for attempt in range(1, _SCHEDULE_ATTEMPTS + 1):
        try:
            _schedule_once(ctx)
            return
        except (resource_requests.ClaimRace, OperationalError) as exc:
            # A concurrent claim won (or a deadlock was broken): schedule again.
            if attempt == _SCHEDULE_ATTEMPTS:
                raise scheduler.NoValidNode(f"gave up after {attempt} concurrent claims: {exc}") from exc
            time.sleep(random.uniform(0.01, 0.05) * attempt)


def _schedule_once(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        if instance.node_id is None:  # not already done before a crash
            flavor = session.get_one(Flavor, ctx.params["flavor_id"])
            demand = _demand(session, instance, flavor.type, ctx.params)
            node = scheduler.schedule(session, demand, ctx.context.settings.node_down_after,
                                      instance_id=instance.id, pinned=ctx.params.get("node_id"))
            instance.node_id = node.id
            ctx.data["node_id"] = node.id
            ctx.data["node_type"] = flavor.type
        ctx.detail["node"] = node_of(session, instance).hostname
        devices = pci.allocated_to(session, instance.id)
        if devices:
            ctx.detail["pci_devices"] = [d.address for d in devices]
        if instance.numa_placement:
            ctx.detail["numa_placement"] = instance.numa_placement


def _unschedule(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        if instance.node_id is not None:
            demand = scheduler.Demand(node_type=ctx.data["node_type"], vcpus=instance.vcpus, ram=instance.ram)
            scheduler.release(session, instance.node_id, demand, instance_id=instance.id)
            instance.node_id = None
        ctx.data.pop("node_id", None)


def _allocate_ports(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        if "nic_ports" in ctx.data:
            return  # done before a crash
        caller = _owner(ctx)
        nic_ports = []
        for index, request in enumerate(ctx.params["networks"]):
            if "port_id" in request:
                port = session.get_one(Port, request["port_id"])
                if port.instance_id not in (None, instance.id):
                    raise Conflict(f"port {port.id} is attached to another instance",
                                   field=f"networks.{index}.port")
            else:
                network = session.get_one(Network, request["network_id"])
                port = networks.create_port(session, caller, ctx.context.network, network,
                                            name=f"{instance.name}-nic{index}",
                                            auto_delete=True, vnic_type=request.get("vnic_type", "normal"),
                                            security_group_refs=request.get("security_groups"))
            port.instance_id = instance.id
            nic_ports.append(port.id)
        ctx.data["nic_ports"] = nic_ports
        ctx.detail["ports"] = nic_ports


def _release_ports(ctx: StepContext) -> None:
    ctx.data.pop("nic_ports", None)
    with ctx.transaction() as session:
        instances.release_ports(session, ctx.context.network, ctx.instance_id or "")


def _create_boot_volume(ctx: StepContext) -> None:
    """Make the boot volume: row first (`creating`), then the data, then the status that says it is whole.

    A crash between the two leaves a `creating` row and perhaps partial
    data; the resumed step finds the row and writes the data again.
    """
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        boot = next((v for v in volumes_of(session, instance.id) if v.delete_on_termination), None)
        if boot is not None and boot.status != VolumeStatus.CREATING:
            ctx.detail["volume"] = boot.id
            return  # written and marked before a crash
        image = session.get(Image, ctx.params["image_id"])
        if image is None:
            raise NotFound("the instance's image was deleted", field="image")
        if boot is None:
            if image.status == images.DELETING:
                raise Conflict(f"the instance's image '{image.name}' is being deleted", field="image")
            flavor = session.get_one(Flavor, ctx.params["flavor_id"])
            boot = volumes.new_volume(session, _owner(ctx), name=f"{instance.name}-boot-{instance.id[:8]}",
                                      size=flavor.disk, image=image, delete_on_termination=True)
            boot.instance_id = instance.id
        volume_id, size, source = boot.id, boot.size, ImageSource.of(image)
    ctx.detail["volume"] = volume_id
    # Copy outside the transaction: images can be large.
    ctx.context.volume_backend.create(volume_id, size, source)
    with ctx.transaction() as session:
        session.get_one(Volume, volume_id).status = VolumeStatus.ATTACHING


def _delete_boot_volume(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        for volume in volumes_of(session, ctx.instance_id or ""):
            if volume.delete_on_termination:
                session.delete(volume)
                ctx.context.volume_backend.delete(volume.id)


def _instance_volume_ids(ctx: StepContext) -> list[str]:
    with ctx.transaction() as session:
        return [v.id for v in volumes_of(session, ctx.instance_id or "")]


def _build_on_node(ctx: StepContext) -> None:
    """Export the instance's volumes, have the agent build the instance on them, record the attachments."""
    volume_ids = _instance_volume_ids(ctx)
    uris = export_volumes(ctx, volume_ids)

    def build(agent: AgentClient, instance: Instance) -> InstanceResult:
        with ctx.transaction() as session:
            flavor = session.get_one(Flavor, ctx.params["flavor_id"])
            vfs = _nic_vfs(ctx, session, instance)
            request = BuildRequest(
                uuid=instance.id, name=instance.name, image=instance.image_id,
                user_data=instance.user_data or None,
                flavor=FlavorSpec(name=flavor.name, vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk),
                networks=[nic_request(p, vfs.get(p.id)) for p in ports_of(session, instance.id)],
                volumes=[volume_request(v, uris[v.id]) for v in volumes_of(session, instance.id)],
                pci_devices=[PciAssignment(address=d.address, request_id=d.request_id)
                             for d in pci.allocated_to(session, instance.id)],
                numa_placement=numa.placement_of(instance))
        return agent.build(request)

    result = call_agent(ctx, build)
    remember_agent_instance(ctx, result)
    record_attachments(ctx, result.instance, volume_ids)


def _nic_vfs(ctx: StepContext, session: Session, instance: Instance) -> dict[str, NicVf]:
    """The VFs of a VM's remote-managed NICs, by port id (the NICs in the order they were asked for)."""
    node = node_of(session, instance)
    devices = pci_binding.devices_by_nic(session, instance.id)
    found = {}
    for index, port_id in enumerate(ctx.data.get("nic_ports", [])):
        if index in devices:
            vf = pci_binding.vm_nic_vf(session, session.get_one(Port, port_id), devices[index], node)
            if vf is not None:
                found[port_id] = vf
    return found


def _delete_on_node(ctx: StepContext) -> None:
    """The node deletes the instance; with the fault of a migration whose undo failed, its source node too,
    where that migration may have left it (after a migration that ended well, the source holds nothing)."""
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        has_node = instance.node_id is not None
        source = (instance.resize_from or {}).get("node_id") if instance.fault else None
    if source:
        call_agent(ctx, lambda agent, instance: agent.delete_instance(instance.id), node_id=source)
    if has_node:
        call_agent(ctx, lambda agent, instance: agent.delete_instance(instance.id))


def _unbuild(ctx: StepContext) -> None:
    """Undo of the build: the node deletes the instance, then the volumes' exports end."""
    _delete_on_node(ctx)
    unexport_volumes(ctx, _instance_volume_ids(ctx))


def _bind_ports(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        host = node_of(session, instance).hostname
        nic_devices = pci_binding.devices_by_nic(session, instance.id)
        for index, port_id in enumerate(ctx.data.get("nic_ports", [])):
            port = session.get_one(Port, port_id)
            profile = nic_profile(ctx, port.id)
            chassis = ""
            if index in nic_devices:
                profile.update(pci_binding.profile(nic_devices[index]))
                chassis = pci_binding.plugging_host(session, port, nic_devices[index])
            networks.bind_port(ctx.context.network, port, host=host, profile=profile, requested_chassis=chassis)


def _unbind_ports(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        for port in ports_of(session, ctx.instance_id or ""):
            networks.unbind_port(ctx.context.network, port)


def _activate(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        instance.status, instance.fault = STATUS_AFTER["create"], None


def _owner(ctx: StepContext) -> Caller:
    """Resources a workflow creates belong to the operation's project."""
    return Caller(project_id=ctx.project_id, project_name="", role=MEMBER, token_id="")


class CreateInstance:
    action = "create"
    rollback = True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        steps = [Step("schedule", _schedule, _unschedule),
                 Step("allocate_ports", _allocate_ports, _release_ports)]
        if params.get("image_id"):
            steps.append(Step("create_boot_volume", _create_boot_volume, _delete_boot_volume))
        steps += [Step("build_on_node", _build_on_node, _unbuild),
                  Step("bind_ports", _bind_ports, _unbind_ports),
                  Step("activate", _activate)]
        return steps

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


# -- delete -------------------------------------------------------------------
def _release_volumes(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instances.release_volumes(session, ctx.context.volume_backend, ctx.instance_id or "")


def _release_claim(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instances.release_claim(session, instance_of(session, ctx))


def _remove_record(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        instance.deleted, instance.status = True, STATUS_AFTER["delete"]


class DeleteInstance:
    action = "delete"
    rollback = False  # a failed delete stops where it failed; deleting again carries on

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("delete_on_node", _delete_on_node),
                Step("release_ports", _release_ports),
                Step("release_volumes", _release_volumes),
                Step("release_claim", _release_claim),
                Step("remove_record", _remove_record)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


# -- force delete (admin, node gone) -----------------------------------------------
def _release_without_node(ctx: StepContext) -> None:
    """Everything in one transaction, with the summary saved in the operation's data alongside.

    A step resumed after a crash finds the summary (the release committed) or
    nothing (it did not, and runs again).
    """
    with ctx.transaction() as session:
        if "released" not in ctx.data:
            ctx.data["released"] = instances.release_without_node(
                session, instance_of(session, ctx), network=ctx.context.network,
                volume_backend=ctx.context.volume_backend, operation_id=ctx.operation_id)
    ctx.detail.update(ctx.data["released"])


class ForceDeleteInstance:
    action = "force_delete"
    rollback = False

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("release_without_node", _release_without_node)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


register(CreateInstance())
register(DeleteInstance())
register(ForceDeleteInstance())
