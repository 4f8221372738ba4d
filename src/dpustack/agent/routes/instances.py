"""Instances on this node: build, delete, power, pause, resize, password, console, NICs and volumes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from dpustack.agent.routes.deps import IdPath, ServiceDep
from dpustack.contract.instances import (BuildRequest, Console, InstanceOut, InstanceResult, NicRequest,
                                        PasswordRequest, RebootRequest, ResizeRequest, StepLog, StepsResult,
                                        VolumeRequest)
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/instances", tags=["instances"], responses=error_responses(502))
Uuid = Annotated[str, IdPath]


def _result(instance: dict[str, Any], steps: list[StepLog]) -> dict[str, Any]:
    return {"instance": instance, "steps": steps}


@router.post("", response_model=InstanceResult)
def build_instance(body: BuildRequest, service: ServiceDep) -> dict[str, Any]:
    """build_and_run_instance: volumes, then NICs, then power on; all undone on a failure."""
    return _result(*service.compute.build(body))


@router.get("", response_model=list[InstanceOut])
def list_instances(service: ServiceDep) -> list[dict[str, Any]]:
    return service.compute.instances()


@router.get("/{uuid}", response_model=InstanceOut)
def get_instance(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    return service.compute.instance(uuid)


@router.delete("/{uuid}", response_model=StepsResult)
def delete_instance(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    """Power off, unplug and delete every function; a failure stops here and can be retried."""
    return {"steps": service.compute.delete(uuid)}


@router.post("/{uuid}/stop", response_model=InstanceResult)
def stop_instance(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.set_power(uuid, "off"))


@router.post("/{uuid}/start", response_model=InstanceResult)
def start_instance(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.set_power(uuid, "on"))


@router.post("/{uuid}/pause", response_model=InstanceResult)
def pause_instance(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    """Stop a running VM's vCPUs, its memory kept; 409 for bare metal and for an instance that is off."""
    return _result(*service.compute.set_paused(uuid, True))


@router.post("/{uuid}/unpause", response_model=InstanceResult)
def unpause_instance(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    """Let a paused VM's vCPUs run on; 409 for bare metal and for an instance that is off."""
    return _result(*service.compute.set_paused(uuid, False))


@router.post("/{uuid}/resize", response_model=InstanceResult, responses=error_responses(409))
def resize_instance(uuid: Uuid, body: ResizeRequest, service: ServiceDep) -> dict[str, Any]:
    """A VM's domain defined again with another flavor and placement (stopped for it, started again if it ran);
    the same flavor and placement again is nothing to do. 409 for a paused VM, and on bare metal."""
    return _result(*service.compute.resize(uuid, body.flavor, body.numa_placement))


@router.post("/{uuid}/reboot", response_model=InstanceResult)
def reboot_instance(uuid: Uuid, body: RebootRequest, service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.reboot(uuid, body.type))


@router.post("/{uuid}/password", response_model=InstanceResult, responses=error_responses(409))
def set_password(uuid: Uuid, body: PasswordRequest, service: ServiceDep) -> dict[str, Any]:
    """A user's new password, set in the running VM through its guest agent; kept nowhere on the node. 409 for
    a stopped instance, and on bare metal (the host takes it from the metadata service at its next boot)."""
    return _result(*service.compute.set_password(uuid, body.user, body.password.get_secret_value()))


@router.get("/{uuid}/console", response_model=Console)
def instance_console(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    console = service.compute.console(uuid)
    return {"type": console.type, "url": console.url}


@router.post("/{uuid}/nics", response_model=InstanceResult)
def add_nic(uuid: Uuid, body: NicRequest, service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.add_nic(uuid, body.port_id, body.mac, body.network_id,
                                                  qos_pps=body.qos_pps, vf=body.vf))


@router.delete("/{uuid}/nics/{port_id}", response_model=InstanceResult)
def remove_nic(uuid: Uuid, port_id: Annotated[str, IdPath], service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.remove_nic(uuid, port_id))


@router.post("/{uuid}/volumes", response_model=InstanceResult)
def add_volume(uuid: Uuid, body: VolumeRequest, service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.add_volume(uuid, body.volume_id, body.uri, body.bootable))


@router.delete("/{uuid}/volumes/{volume_id}", response_model=InstanceResult)
def remove_volume(uuid: Uuid, volume_id: Annotated[str, IdPath], service: ServiceDep) -> dict[str, Any]:
    return _result(*service.compute.remove_volume(uuid, volume_id))
