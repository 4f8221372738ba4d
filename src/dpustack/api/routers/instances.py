"""Instances: every change answers 202 with the operation that carries it out, but a new admin password of
a bare-metal host (204: stored for the host's next boot) and the confirm of a resize or a migration (200:
nothing runs on a node)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from dpustack.api.deps import CallerDep, ContextDep, OrchestratorDep, get_caller, user_caller
from dpustack.api.schemas import (AdminPasswordReset, InstanceCreate, InstanceDisk, InstanceNic, InstancePublic,
                                  InstanceMigrate, InstanceResize, NicRequest, OldFlavor, OperationPublic,
                                  RebootRequest, VolumeAttach)
from dpustack.contract.instances import Console
from dpustack.controller.services import instances, migration, resize
from dpustack.api.routers.operations import accept, accept_as
from dpustack.api.routers.pci import pci_requests_view
from dpustack.controller.workflows.common import ports_of, volumes_of
from dpustack.db.models import Instance, Node
from dpustack.errors import DpustackError
from dpustack.web.console_relay import deny, relay_upstream
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/instances", tags=["instances"])
CONSOLE_TIMEOUT = 10.0  # seconds: a console request is interactive
CONSOLE_LOG_MAX = 2 * 1024 * 1024  # bytes: what an agent keeps of a console
NEXT_BOOT = ("A bare-metal host: stored, encrypted. Nothing changes on the host now: it takes the password at "
             "its next boot (e.g. `POST /v1/instances/{ref}/reboot`), from the metadata service (meta_data.json "
             "`admin_pass`).")


def instance_public(session: Session, instance: Instance) -> InstancePublic:
    fields = {name: getattr(instance, name) for name in InstancePublic.model_fields
              if name not in ("node", "ports", "volumes", "nics", "disks", "pci_requests", "flavor", "old_flavor",
                              "source_node")}
    old = instance.resize_from
    old_flavor = None if not old else OldFlavor(id=old["flavor_id"], name=old["flavor_name"], vcpus=old["vcpus"],
                                                ram=old["ram"], disk=old["disk"],
                                                numa_placement=old["numa_placement"])
    ports, volumes = ports_of(session, instance.id), volumes_of(session, instance.id)
    return InstancePublic(**fields, node=instance.node.hostname if instance.node else None,
                          ports=[p.id for p in ports], volumes=[v.id for v in volumes],
                          nics=[InstanceNic(port_id=p.id, network_id=p.network_id, mac_address=p.mac_address,
                                            ip_address=p.ip_address, bdf=(p.binding_profile or {}).get("bdf"))
                                for p in ports],
                          disks=[InstanceDisk(volume_id=v.id, bootable=v.bootable, bdf=v.bdf) for v in volumes],
                          pci_requests=pci_requests_view(session, instance.id),
                          flavor=instance.flavor.name if instance.flavor else None, old_flavor=old_flavor,
                          source_node=_hostname(session, migration.source_node_id(instance)))


def _hostname(session: Session, node_id: str | None) -> str | None:
    node = session.get(Node, node_id) if node_id else None
    return node.hostname if node else None


@router.post("", response_model=OperationPublic, status_code=202, responses=error_responses(404))
def create_instance(body: InstanceCreate, context: ContextDep, caller: CallerDep,
                    orchestrator: OrchestratorDep) -> OperationPublic:
    data: dict[str, Any] = body.model_dump()
    data["networks"] = [nic.model_dump() for nic in body.networks]
    key_file = context.settings.secret_key_file  # encrypts admin_pass (kept a SecretStr until then)
    return accept(context, orchestrator, lambda s: instances.create_instance(s, caller, data, key_file=key_file))


@router.get("", response_model=list[InstancePublic])
def list_instances(context: ContextDep, caller: CallerDep) -> list[InstancePublic]:
    with context.transaction() as session:
        return [instance_public(session, i) for i in instances.list_instances(session, caller)]


@router.get("/{ref}", response_model=InstancePublic)
def show_instance(ref: str, context: ContextDep, caller: CallerDep) -> InstancePublic:
    with context.transaction() as session:
        return instance_public(session, instances.get_instance(session, caller, ref))


@router.delete("/{ref}", response_model=OperationPublic, status_code=202)
def delete_instance(ref: str, context: ContextDep, caller: CallerDep, orchestrator: OrchestratorDep,
                    force: Annotated[bool, Query(description="admin only: release everything in the controller "
                                                             "without calling the node (for a node that is gone)")]
                    = False) -> OperationPublic:
    if force:
        return accept(context, orchestrator, lambda s: instances.force_delete(s, caller, ref))
    return accept(context, orchestrator, lambda s: instances.start_action(s, caller, ref, "delete"))


@router.post("/{ref}/stop", response_model=OperationPublic, status_code=202)
def stop_instance(ref: str, context: ContextDep, caller: CallerDep,
                  orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: instances.start_action(s, caller, ref, "stop"))


@router.post("/{ref}/start", response_model=OperationPublic, status_code=202)
def start_instance(ref: str, context: ContextDep, caller: CallerDep,
                   orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: instances.start_action(s, caller, ref, "start"))


@router.post("/{ref}/pause", response_model=OperationPublic, status_code=202)
def pause_instance(ref: str, context: ContextDep, caller: CallerDep,
                   orchestrator: OrchestratorDep) -> OperationPublic:
    """Stop a VM's vCPUs, its memory kept (PAUSED); from ACTIVE, or PAUSED (nothing changes). 409 naming
    `instance` for a bare-metal instance and for any other status."""
    return accept(context, orchestrator, lambda s: instances.start_action(s, caller, ref, "pause"))


@router.post("/{ref}/unpause", response_model=OperationPublic, status_code=202)
def unpause_instance(ref: str, context: ContextDep, caller: CallerDep,
                     orchestrator: OrchestratorDep) -> OperationPublic:
    """Let a paused VM run on where it was (ACTIVE); from PAUSED, or ACTIVE (nothing changes). 409 naming
    `instance` for a bare-metal instance and for any other status."""
    return accept(context, orchestrator, lambda s: instances.start_action(s, caller, ref, "unpause"))


@router.post("/{ref}/reboot", response_model=OperationPublic, status_code=202)
def reboot_instance(ref: str, context: ContextDep, caller: CallerDep, orchestrator: OrchestratorDep,
                    body: RebootRequest | None = None) -> OperationPublic:
    params = {"type": (body or RebootRequest()).type}
    return accept(context, orchestrator, lambda s: instances.start_action(s, caller, ref, "reboot", params))


@router.post("/{ref}/resize", response_model=OperationPublic, status_code=202, responses=error_responses(404))
def resize_instance(ref: str, body: InstanceResize, context: ContextDep, caller: CallerDep,
                    orchestrator: OrchestratorDep) -> OperationPublic:
    """Give a VM another flavor on its node (RESIZE, then VERIFY_RESIZE): its CPU, RAM and NUMA placement are
    claimed there now, beside the old flavor's, which it holds until the resize is confirmed or reverted; the
    operation stops the VM if it runs, defines it again and starts it again. From ACTIVE or SHUTOFF. 404 naming
    `flavor` for one that does not exist; 409 naming `instance` for a bare-metal instance and another status,
    naming `flavor` for a flavor of another type, the same flavor, a smaller disk, other PCI devices, and one
    that does not fit on the VM's node (the answer says why)."""
    return accept(context, orchestrator, lambda s: resize.start_resize(s, caller, ref, body.flavor))


@router.post("/{ref}/resize-confirm", response_model=InstancePublic)
def confirm_resize(ref: str, context: ContextDep, caller: CallerDep) -> InstancePublic:
    """Keep a resized VM's new flavor: the old flavor's CPU, RAM and placement are freed on the node, and the VM
    is ACTIVE (or SHUTOFF) again, as before its resize. Nothing changes on the node, so the answer is the
    instance (200), no operation. 409 naming `instance` but in VERIFY_RESIZE, and for bare metal."""
    with context.transaction() as session:
        return instance_public(session, resize.confirm_resize(session, caller, ref))


@router.post("/{ref}/resize-revert", response_model=OperationPublic, status_code=202)
def revert_resize(ref: str, context: ContextDep, caller: CallerDep,
                  orchestrator: OrchestratorDep) -> OperationPublic:
    """Give a resized VM its old flavor back (REVERT_RESIZE): the operation defines it again with the old
    flavor and placement (stopped and started again if it runs), then frees the new flavor's claims; ACTIVE
    (or SHUTOFF) after, as before the resize. 409 naming `instance` but in VERIFY_RESIZE, and for bare
    metal."""
    return accept(context, orchestrator, lambda s: resize.start_revert(s, caller, ref))


@router.post("/{ref}/migrate", response_model=OperationPublic, status_code=202,
             responses=error_responses(403, 404))
def migrate_instance(ref: str, body: InstanceMigrate, context: ContextDep, caller: CallerDep,
                     orchestrator: OrchestratorDep) -> OperationPublic:
    """Move an instance cold to another node (MIGRATING, then VERIFY_MIGRATE), on the same ports and volumes:
    a VM to another VM node, or with a flavor of the other type a host to a VM or a VM to a host. The target
    (the scheduler's choice, or `node`: admin only) is claimed now, with the flavor's CPU, RAM, NUMA placement
    and the instance's PCI devices asked again there; the source's claims stay until the migration is
    confirmed or reverted. The operation stops it, builds it on the target (running if it ran), moves its
    ports' binding and takes its functions from the source. From ACTIVE or SHUTOFF. With `live`: the operation
    `live_migrate` moves a running VM while its guest runs on (its NICs unplugged for the switch-over and
    plugged on the target), ACTIVE on the target after, the source's claims freed: no confirm. 403 naming
    `node` without an admin token; 404 naming `node` or `flavor`; 409 naming `instance` (its status, a
    remote-managed NIC, no node can take it; live: bare metal, not running, PCI devices), `node` (its own node,
    another type than the flavor's, cannot take it), `flavor` (a disk smaller than the boot volume, other PCI
    devices; live: another flavor) or `volume` (busy)."""
    down_after = context.settings.node_down_after
    return accept(context, orchestrator, lambda s: migration.start_migrate(
        s, caller, ref, down_after=down_after, node_ref=body.node, flavor_ref=body.flavor, live=body.live))


@router.post("/{ref}/migrate-abort", response_model=OperationPublic, status_code=202)
def abort_migrate(ref: str, context: ContextDep, caller: CallerDep) -> OperationPublic:
    """Abort a live migration while its memory moves (its step `migrate_live`): the source's hypervisor stops
    it, the operation fails and its undos leave the VM running on its source, its NICs plugged back, nothing
    on the target. The answer is that operation (202: it ends as it undoes). 409 naming `instance` without a
    live migration in progress, or at another step (before it: try again; after it: too late)."""
    with context.transaction() as session:
        operation, source = migration.abort_live(session, caller, ref)
        public, instance_id = OperationPublic.model_validate(operation), operation.instance_id or ""
        agent = context.agent(source)
    with agent:
        agent.migrate_abort(instance_id)
    return public


@router.post("/{ref}/migrate-confirm", response_model=InstancePublic)
def confirm_migrate(ref: str, context: ContextDep, caller: CallerDep) -> InstancePublic:
    """Keep a migrated instance on its new node: the source node's CPU, RAM, PCI devices and placement are
    freed, and it is ACTIVE (or SHUTOFF) again, as before its migration. Nothing runs on a node (the source let
    go of it during the migration), so the answer is the instance (200), no operation. 409 naming `instance`
    but in VERIFY_MIGRATE."""
    with context.transaction() as session:
        return instance_public(session, migration.confirm_migrate(session, caller, ref))


@router.post("/{ref}/migrate-revert", response_model=OperationPublic, status_code=202)
def revert_migrate(ref: str, context: ContextDep, caller: CallerDep,
                   orchestrator: OrchestratorDep) -> OperationPublic:
    """Bring a migrated instance back to its source node (REVERT_MIGRATE): the operation stops it on the
    target, builds it on the source again with its old flavor, same ports and volumes, moves the ports' binding
    back and takes its functions from the target, whose claims it frees; ACTIVE (or SHUTOFF) after, as before
    the migration. 409 naming `instance` but in VERIFY_MIGRATE."""
    return accept(context, orchestrator, lambda s: migration.start_revert(s, caller, ref))


SET_NOW = ("A VM (ACTIVE): the operation `set_password` that sets the password of its `root` now, through its "
           "QEMU guest agent; the password is stored (encrypted) for the metadata service as well.")


@router.post("/{ref}/admin-password", status_code=204, response_model=None,
             responses={204: {"description": NEXT_BOOT}, 202: {"model": OperationPublic, "description": SET_NOW}})
def set_admin_password(ref: str, body: AdminPasswordReset, context: ContextDep, caller: CallerDep,
                       orchestrator: OrchestratorDep) -> Response:
    """Replace the instance's admin password. A bare-metal host takes it at its next boot, from the metadata
    service: 204, no operation. A VM gets it now, through its guest agent: 202 with the operation, which
    needs the VM ACTIVE (409 otherwise). 409 while the instance is being deleted or busy."""
    key_file = context.settings.secret_key_file
    operation = accept_as(context, orchestrator,
                          lambda s: instances.set_admin_pass(s, caller, ref, body.new_password, key_file=key_file),
                          lambda op: None if op is None else OperationPublic.model_validate(op))
    if operation is None:
        return Response(status_code=204)
    return JSONResponse(operation.model_dump(mode="json"), status_code=202)


@router.post("/{ref}/nics", response_model=OperationPublic, status_code=202)
def add_nic(ref: str, body: NicRequest, context: ContextDep, caller: CallerDep,
            orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: instances.add_nic(s, caller, ref, body.model_dump()))


@router.delete("/{ref}/nics/{port_id}", response_model=OperationPublic, status_code=202)
def remove_nic(ref: str, port_id: str, context: ContextDep, caller: CallerDep,
               orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator,
                  lambda s: instances.start_action(s, caller, ref, "remove_nic", {"port_id": port_id}))


@router.post("/{ref}/volumes", response_model=OperationPublic, status_code=202)
def add_volume(ref: str, body: VolumeAttach, context: ContextDep, caller: CallerDep,
               orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: instances.add_volume(s, caller, ref, body.volume))


@router.delete("/{ref}/volumes/{volume}", response_model=OperationPublic, status_code=202)
def remove_volume(ref: str, volume: str, context: ContextDep, caller: CallerDep,
                  orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: instances.remove_volume(s, caller, ref, volume))


@router.get("/{ref}/console", response_model=Console, responses=error_responses(502))
def console(ref: str, context: ContextDep, caller: CallerDep) -> Console:
    """The host BMC's console, handed over by the node's agent (a serial-over-LAN stream of the host)."""
    with context.transaction() as session:
        instance, node = instances.console_target(session, caller, ref)
    with context.agent(node, timeout=CONSOLE_TIMEOUT) as agent:
        return instances.console(agent, instance)


@router.get("/{ref}/console/log", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the newest bytes the console printed"},
    **error_responses(404, 409, 502)})
def console_log(ref: str, context: ContextDep, caller: CallerDep,
                limit: Annotated[int, Query(ge=0, le=CONSOLE_LOG_MAX)] = 65536) -> Response:
    """What the server printed on its serial console since it was built (the newest ``limit`` bytes), as its
    node's agent logged it."""
    with context.transaction() as session:
        instance, node = instances.console_target(session, caller, ref)
    with context.agent(node, timeout=CONSOLE_TIMEOUT) as agent:
        return Response(agent.console_log(instance.id, limit), media_type="application/octet-stream")


@router.websocket("/{ref}/console/stream")
async def console_stream(websocket: WebSocket, ref: str) -> None:
    """The server's serial console (its BMC's serial-over-LAN, or its hypervisor's serial port), shared with
    whoever else is attached: binary messages of what it prints, and of what is typed. The handshake needs
    ``Authorization: Bearer``; it is refused with the same error answers as ``GET .../console``."""
    context = websocket.app.state.context

    def target() -> tuple[str, Any]:
        caller = user_caller(get_caller(websocket))
        with context.transaction() as session:
            instance, node = instances.console_target(session, caller, ref)
            return instance.id, context.agent(node, timeout=CONSOLE_TIMEOUT)

    try:
        uuid, agent = await run_in_threadpool(target)
        try:
            upstream = await agent.open_console_stream(uuid)
        finally:
            agent.close()
    except DpustackError as exc:
        await deny(websocket, exc)
        return
    await websocket.accept()
    await relay_upstream(websocket, upstream)
