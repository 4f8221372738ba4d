"""Instances: validate a request, then hand the work to the orchestrator as an operation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dpustack.contract.instances import Console
from dpustack.controller import orchestrator, scheduler
from dpustack.controller.services import flavors, images, networks, nodes, pci_flavors, security_groups, volumes
from dpustack.controller.services import instance_metadata, keypairs, numa, pci
from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.controller.services.volume_states import VolumeStatus
from dpustack.controller.agent_client import AgentClient
from dpustack.controller.netbackend import NetworkBackend
from dpustack.controller.volumebackend import VolumeBackend
from dpustack.db.models import Instance, Node, Operation, PciRequest, Port, Volume
from dpustack.errors import Conflict, Forbidden, InvalidInput
from dpustack.instance_states import (ALLOWED_FROM, STATUS_AFTER, STATUS_DURING, VM_ONLY, WITH_CONSOLE,
                                      InstanceStatus)
from dpustack.pci.requests import EXTRA_SPEC, numa_policy, parse_pci_flavor_spec

log = logging.getLogger(__name__)

REMOTE_MANAGED = "remote-managed"
REMOTE_MANAGED_TRAIT = "COMPUTE_REMOTE_MANAGED_PORTS"

_ALIVE = Instance.deleted.is_(False)
#: the guest user whose password a running VM is given (Nova's default admin user of a Linux image)
ADMIN_USER = "root"


def get_instance(session: Session, caller: Caller, ref: str, *, field: str = "instance") -> Instance:
    return find(session, Instance, ref, caller, kind="instance", field=field, extra=_ALIVE)


def list_instances(session: Session, caller: Caller) -> list[Instance]:
    query = scoped(select(Instance).where(_ALIVE), Instance, caller).order_by(Instance.created_at)
    return list(session.scalars(query))


def create_instance(session: Session, caller: Caller, body: dict[str, Any], *,
                    key_file: Path | None = None) -> Operation:
    """Validate everything up front, so a bad request changes nothing.

    `key_file` is the controller's key, which encrypts an `admin_pass`.
    """
    ensure_unique_name(session, Instance, body["name"], caller.project_id, kind="instance", extra=_ALIVE)
    flavor = flavors.get_flavor(session, body["flavor"])
    image = images.get_image(session, caller, body["image"]) if body.get("image") else None
    if image is not None:
        volumes.check_image_fits(image, flavor.disk, field="image")
    node_id = None
    if body.get("node"):
        caller.require_admin()
        node_id = nodes.get_node(session, body["node"]).id
    numa_specs = None
    if flavor.type == "vm":  # a VM's vCPUs and memory are placed in its node's NUMA cells
        numa.check_specs(flavor, flavor.extra_specs or {}, field_prefix="flavor.")
        numa_specs = numa.numa_specs(flavor.extra_specs or {})
    requests = [_resolve_nic(session, caller, nic, f"networks.{i}") for i, nic in enumerate(body["networks"])]
    pci_requests = pci_requests_for(session, flavor.extra_specs or {}, body["networks"], requests)
    traits = sorted({REMOTE_MANAGED_TRAIT for r in requests if r.get("vnic_type") == REMOTE_MANAGED})
    keypair = None
    if body.get("key_name"):
        keypair = keypairs.keypair_of_project(session, caller.project_id, body["key_name"])
    instance = Instance(name=body["name"], project_id=caller.project_id, flavor_id=flavor.id,
                        image_id=image.id if image else None, user_data=body.get("user_data") or "",
                        vcpus=flavor.vcpus, ram=flavor.ram, status=InstanceStatus.BUILDING, task_state="create")
    if keypair is not None:  # a copy: the instance keeps its key if the key pair is deleted
        instance.key_name, instance.key_data = keypair.name, keypair.public_key
    instance.admin_pass_encrypted = instance_metadata.seal_admin_pass(body.get("admin_pass"), key_file)
    session.add(instance)
    session.flush()
    for request in pci_requests:
        session.add(PciRequest(instance_id=instance.id, **request))
    params = {"flavor_id": flavor.id, "image_id": instance.image_id, "node_id": node_id, "networks": requests,
              "traits": traits, "pci_policy": numa_policy(flavor.extra_specs or {}), "numa_specs": numa_specs}
    return orchestrator.submit(session, action="create", project_id=caller.project_id,
                               instance_id=instance.id, params=params)


def _resolve_nic(session: Session, caller: Caller, nic: dict[str, Any], field: str) -> dict[str, Any]:
    if nic.get("port"):
        port = networks.get_port(session, caller, nic["port"], field=f"{field}.port")
        if port.instance_id:
            raise Conflict(f"port {port.id} is attached to instance {port.instance_id}", field=f"{field}.port")
        if nic.get("security_groups") is not None:
            raise InvalidInput("a port keeps its own security groups: change them with PUT /v1/ports/{id}",
                               field=f"{field}.security_groups")
        return {"port_id": port.id, "vnic_type": port.vnic_type}
    if nic.get("network"):
        network = networks.get_network(session, caller, nic["network"], field=f"{field}.network")
        request: dict[str, Any] = {"network_id": network.id, "vnic_type": nic.get("vnic_type") or "normal"}
        groups = security_groups.check_refs(session, caller.project_id, nic.get("security_groups"),
                                            field=f"{field}.security_groups")
        if groups is not None:
            request["security_groups"] = groups
        return request
    raise InvalidInput("give a network or a port", field=field)


def pci_requests_for(session: Session, extra_specs: dict[str, str], nics: list[dict[str, Any]],
                     resolved: list[dict[str, str]]) -> list[dict[str, Any]]:
    """PCI requests from the flavor's `pci_passthrough:pci_flavor` and from NICs that need a device."""
    found = []
    if extra_specs.get(EXTRA_SPEC):
        for request in parse_pci_flavor_spec(extra_specs[EXTRA_SPEC], field=f"flavor.{EXTRA_SPEC}"):
            specs = pci_flavors.specs_for(session, request.flavors, field=f"flavor.{EXTRA_SPEC}")
            found.append({"count": request.count, "flavors": list(request.flavors), "specs": specs,
                          "source": "flavor", "nic_index": None})
    for index, (nic, resolved_nic) in enumerate(zip(nics, resolved)):
        field = f"networks.{index}.pci_flavor"
        remote = resolved_nic.get("vnic_type") == REMOTE_MANAGED
        if nic.get("pci_flavor"):
            (request, *more) = parse_pci_flavor_spec(nic["pci_flavor"], field=field)
            if more or request.count != 1:
                raise InvalidInput("a NIC takes exactly one device: use 1:FLAVOR[,FLAVOR...]", field=field)
            specs = pci_flavors.specs_for(session, request.flavors, field=field)
            flavors = list(request.flavors)
        elif remote:
            specs, flavors = [{}], []
        else:
            continue
        if remote:  # a remote-managed port needs a VF its DPU can plug
            specs = [{**spec, "remote_managed": "true"} for spec in specs]
        found.append({"count": 1, "flavors": flavors, "specs": specs, "source": "nic", "nic_index": index})
    return found


def start_action(session: Session, caller: Caller, ref: str, action: str,
                 params: dict[str, Any] | None = None) -> Operation:
    """Lock the instance for `action` and submit the operation; 409 naming `instance` for a status the action
    does not start from, and for pause and unpause of a bare-metal instance."""
    instance = get_instance(session, caller, ref)
    check_allowed(instance, action)
    allowed = ALLOWED_FROM.get(action)
    if allowed is not None and instance.node_id is None:
        raise Conflict(f"instance '{instance.name}' has no node (its build failed); delete it", field="instance")
    params = params or {}
    _check_devices(session, instance, action, params)
    orchestrator.lock_instance(session, instance, action)
    if action in STATUS_DURING:
        instance.status = STATUS_DURING[action]
    operation = orchestrator.submit(session, action=action, project_id=instance.project_id,
                                    instance_id=instance.id, params=params)
    if action in ("add_volume", "remove_volume"):
        volume = session.get_one(Volume, params["volume_id"])
        volumes.hold(session, volume, operation)
        volume.status = VolumeStatus.ATTACHING if action == "add_volume" else VolumeStatus.DETACHING
    if action in ("delete", "force_delete"):
        for volume in session.scalars(select(Volume).where(Volume.instance_id == instance.id)):
            volume.status = VolumeStatus.DETACHING
    return operation


#: how a refusal names an action, where its name does not say it
_ACTION_WORDS = {"resize_confirm": "confirm the resize of", "resize_revert": "revert the resize of",
                 "migrate_confirm": "confirm the migration of", "migrate_revert": "revert the migration of"}


def _status_hint(action: str, status: str) -> str:
    """What to do first, for an action the instance's status does not allow."""
    if status == InstanceStatus.PAUSED:
        return ": unpause it first"
    if status == InstanceStatus.VERIFY_RESIZE:
        return ": confirm or revert its resize first"
    if status == InstanceStatus.VERIFY_MIGRATE:
        return ": confirm or revert its migration first"
    if action in ("resize_confirm", "resize_revert"):
        return ": it has no resize waiting for a confirm or revert"
    if action in ("migrate_confirm", "migrate_revert"):
        return ": it has no migration waiting for a confirm or revert"
    return ""


def check_allowed(instance: Instance, action: str) -> None:
    """409 naming `instance` for an action its status does not start from, and for one only a VM takes."""
    if action in VM_ONLY:
        check_vm(instance, action)
    allowed = ALLOWED_FROM.get(action)
    if allowed is not None and instance.status not in allowed:
        raise Conflict(f"cannot {_ACTION_WORDS.get(action, action.replace('_', ' '))} instance '{instance.name}' "
                       f"in status {instance.status}{_status_hint(action, instance.status)}", field="instance")


def check_vm(instance: Instance, action: str) -> None:
    """409 naming `instance` for an action only a VM takes, asked of a bare-metal instance."""
    if not _bare_metal(instance):
        return
    if action in ("pause", "unpause"):
        raise Conflict(f"bare-metal instances cannot be paused or unpaused: '{instance.name}' is one (only a VM "
                       "can; stop it instead)", field="instance")
    raise Conflict(f"bare-metal instances cannot be resized: '{instance.name}' is one (its host is fixed: its "
                   "flavor is the host's; only a VM can)", field="instance")


def _bare_metal(instance: Instance) -> bool:
    """Whether the instance is a bare-metal one, by its flavor (which cannot be deleted while it is in use)."""
    return instance.flavor is not None and instance.flavor.type == "bm"


def _check_devices(session: Session, instance: Instance, action: str, params: dict[str, Any]) -> None:
    if action == "remove_nic":
        port = session.get(Port, params["port_id"])
        if port is None or port.instance_id != instance.id:
            raise InvalidInput(f"port {params['port_id']} is not a NIC of '{instance.name}'", field="port_id")
        if port.vnic_type == REMOTE_MANAGED:  # as Nova refuses to detach such a port (seed 001); adding one too
            raise Conflict(f"port {port.id} is a remote-managed NIC of '{instance.name}': it stays until the "
                           "server is deleted", field="port_id")
    if action == "add_volume":
        volume = session.get_one(Volume, params["volume_id"])
        if volume.status != VolumeStatus.AVAILABLE or volume.instance_id:
            raise Conflict(f"volume '{volume.name}' is {volume.status}", field="volume")
    if action == "remove_volume":
        volume = session.get_one(Volume, params["volume_id"])
        if volume.instance_id != instance.id:
            raise InvalidInput(f"volume '{volume.name}' is not attached to '{instance.name}'", field="volume")
        if volume.delete_on_termination:
            raise Conflict(f"volume '{volume.name}' is the boot volume of '{instance.name}'", field="volume")


def force_delete(session: Session, caller: Caller, ref: str) -> Operation:
    """Admin only: delete an instance without calling its node (for a node that is gone)."""
    if not caller.is_admin:
        raise Forbidden("deleting by force needs an admin token", field="force")
    return start_action(session, caller, ref, "force_delete")


# -- releasing what an instance holds in the controller ---------------------------------
def release_ports(session: Session, network: NetworkBackend, instance_id: str) -> list[str]:
    """Delete the ports made for the instance, unbind and detach the others; their ids."""
    released = []
    for port in list(session.scalars(select(Port).where(Port.instance_id == instance_id)
                                     .order_by(Port.created_at))):
        released.append(port.id)
        if port.auto_delete:
            networks.remove_port(session, network, port)
        else:
            networks.unbind_port(network, port)
            port.instance_id = None
    return released


def release_volumes(session: Session, backend: VolumeBackend, instance_id: str) -> list[str]:
    """End the exports of the instance's volumes, delete its boot volume (record and data) and detach
    the others; their ids.

    A boot volume that snapshots were taken of, or that an operation is changing, is kept: detached,
    it becomes an ordinary volume of the project.
    """
    released = []
    for volume in list(session.scalars(select(Volume).where(Volume.instance_id == instance_id)
                                       .order_by(Volume.created_at))):
        released.append(volume.id)
        volumes.end_attachment(backend, volume)
        if volume.delete_on_termination and not volume.operation_id and not volumes.snapshot_names(session, volume):
            session.delete(volume)
            session.flush()
            backend.delete(volume.id)
        else:
            volume.instance_id, volume.delete_on_termination = None, False
            if volume.status != VolumeStatus.EXTENDING:  # an extend in progress says when it is done
                volume.status = VolumeStatus.AVAILABLE
    return released


def release_claim(session: Session, instance: Instance) -> None:
    """Give the node back the instance's CPU, RAM, PCI devices and NUMA placement (both flavors' while a resize
    waits for its confirm, both nodes' while a migration does); the instance has no node after."""
    if instance.node_id is None:
        return
    node = session.get_one(Node, instance.node_id)
    scheduler.release(session, node.id, scheduler.Demand(node_type=node.node_type, vcpus=instance.vcpus,
                                                         ram=instance.ram), instance_id=instance.id)
    old = instance.resize_from
    if old and old.get("node_id"):  # a migration waiting for its confirm: the source node's claims too
        source = session.get_one(Node, old["node_id"])
        scheduler.release(session, source.id, scheduler.Demand(node_type=source.node_type, vcpus=old["vcpus"],
                                                               ram=old["ram"]))
    elif old:
        scheduler.release_some(session, node.id, old["vcpus"], old["ram"])
    instance.resize_from = None
    instance.node_id = None


def release_without_node(session: Session, instance: Instance, *, network: NetworkBackend,
                         volume_backend: VolumeBackend, operation_id: str | None = None) -> dict[str, Any]:
    """Forget `instance` in the controller, in the session's transaction, without calling its node.

    Releases its node claim (CPU, RAM, PCI devices), deletes its own ports and
    its boot volume, detaches the ports and volumes it was given (their exports
    end: the node can no longer read or write them), and marks it
    deleted, with a fault saying that the node was not cleaned. Returns what
    was released and that warning. Nothing runs on the node, so its
    functions, switch ports and volume attachments for the instance may stay
    there. Safe to repeat: a forgotten instance holds nothing. The caller
    makes sure no operation is running on the instance meanwhile.
    """
    hostname = instance.node.hostname if instance.node is not None else None
    summary: dict[str, Any] = {"node": hostname, "node_cleaned": False if hostname else None,
                               "pci_devices": [d.address for d in pci.allocated_to(session, instance.id)],
                               "ports": release_ports(session, network, instance.id),
                               "volumes": release_volumes(session, volume_backend, instance.id)}
    release_claim(session, instance)
    if hostname:
        summary["warning"] = (f"node {hostname} was not called: what it holds for this instance (PCIe functions, "
                              "switch ports, volume attachments) was not removed there")
        instance.fault = {"message": f"deleted by force; {summary['warning']}", "step": "release_without_node",
                          "operation_id": operation_id}
    instance.deleted, instance.status = True, STATUS_AFTER["force_delete"]
    session.flush()
    return summary


def add_nic(session: Session, caller: Caller, ref: str, body: dict[str, Any]) -> Operation:
    if body.get("pci_flavor"):
        raise InvalidInput("NICs with a PCI device can only be given when the server is created",
                           field="pci_flavor")
    request = _resolve_nic(session, caller, body, "body")
    if request.get("vnic_type") == REMOTE_MANAGED:
        raise InvalidInput("remote-managed NICs can only be given when the server is created", field="vnic_type")
    return start_action(session, caller, ref, "add_nic", request)


def add_volume(session: Session, caller: Caller, ref: str, volume_ref: str) -> Operation:
    volume = volumes.get_volume(session, caller, volume_ref)
    return start_action(session, caller, ref, "add_volume", {"volume_id": volume.id})


def remove_volume(session: Session, caller: Caller, ref: str, volume_ref: str) -> Operation:
    volume = volumes.get_volume(session, caller, volume_ref)
    return start_action(session, caller, ref, "remove_volume", {"volume_id": volume.id})


def set_admin_pass(session: Session, caller: Caller, ref: str, new_password: SecretStr, *,
                   key_file: Path) -> Operation | None:
    """Replace the admin password the metadata service hands the instance, sealed as at create; for a VM, also
    start the operation that sets it in the running guest now (its `root` user, through the guest agent).

    A bare-metal host (or an instance that is not a VM) takes the password at its next boot (meta_data.json
    `admin_pass`): None, no operation. A VM must be ACTIVE (409 naming `instance` otherwise, nothing stored)
    and idle (409 busy). Refused (409 naming `instance`) once the instance is being deleted; setting the same
    password again is fine. The password is in no operation's params, no log and no answer.
    """
    instance = get_instance(session, caller, ref)
    operation = None
    if _is_vm(instance):
        if instance.status != InstanceStatus.ACTIVE:
            raise Conflict(f"instance '{instance.name}' is {instance.status}: a VM's password is set in its running "
                           "guest, so it must be ACTIVE", field="instance")
        operation = start_action(session, caller, ref, "set_password", {"user": ADMIN_USER})
    sealed = instance_metadata.seal_admin_pass(new_password, key_file)
    # One conditional UPDATE: a delete that starts meanwhile wins, and the password is not written.
    result = session.execute(update(Instance)
                             .where(Instance.id == instance.id, _ALIVE, Instance.status != InstanceStatus.DELETING)
                             .values(admin_pass_encrypted=sealed)
                             .execution_options(synchronize_session=False))
    session.refresh(instance)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"instance '{instance.name}' is being deleted: its admin password can no longer change",
                       field="instance")
    if operation is not None:
        log.info("admin password of instance %s (%s, project %s) replaced; operation %s sets it in the VM now",
                 instance.id, instance.name, instance.project_id, operation.id)
    else:
        log.info("admin password of instance %s (%s, project %s) replaced; its host takes it at its next boot",
                 instance.id, instance.name, instance.project_id)
    return operation


def _is_vm(instance: Instance) -> bool:
    """Whether the instance runs as a VM: on a `vm` node, or (not placed yet) of a `vm` flavor."""
    if instance.node is not None:
        return instance.node.node_type == "vm"
    return instance.flavor is not None and instance.flavor.type == "vm"


def console_target(session: Session, caller: Caller, ref: str) -> tuple[Instance, Any]:
    """The instance and its node, for a console request."""
    instance = get_instance(session, caller, ref)
    if instance.node_id is None or instance.status not in WITH_CONSOLE:
        raise Conflict(f"instance '{instance.name}' has no console in status {instance.status}", field="instance")
    return instance, nodes.get_node(session, instance.node_id)


def console(agent: AgentClient, instance: Instance) -> Console:
    return agent.console(instance.id)
