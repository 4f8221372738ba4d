"""Seed 000 "nova-compute" calls: instance lifecycle on this node."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from dpustack.agent.routes.deps import IdPath, RuntimeDep
from dpustack.contract.instances import (BuildRequest, Console, InstanceOut, InstanceResult, NicRequest,
                                        RebootRequest, StepLog, StepsResult, VolumeRequest)
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/instances", tags=["instances"], responses=error_responses(502))
Uuid = Annotated[str, IdPath]


def _result(instance: dict[str, Any], steps: list[StepLog]) -> dict[str, Any]:
    return {"instance": instance, "steps": steps}


@router.post("", response_model=InstanceResult)
def build_instance(body: BuildRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """build_and_run_instance: volumes, then NICs, then power on; all undone on a failure."""
    return _result(*runtime.compute.build(body))


@router.get("", response_model=list[InstanceOut])
def list_instances(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return runtime.compute.instances()


@router.get("/{uuid}", response_model=InstanceOut)
def get_instance(uuid: Uuid, runtime: RuntimeDep) -> dict[str, Any]:
    return runtime.compute.instance(uuid)


@router.delete("/{uuid}", response_model=StepsResult)
def delete_instance(uuid: Uuid, runtime: RuntimeDep) -> dict[str, Any]:
    """Power off, unplug and delete every function; a failure stops here and can be retried."""
    return {"steps": runtime.compute.delete(uuid)}


@router.post("/{uuid}/stop", response_model=InstanceResult)
def stop_instance(uuid: Uuid, runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.set_power(uuid, "off"))


@router.post("/{uuid}/start", response_model=InstanceResult)
def start_instance(uuid: Uuid, runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.set_power(uuid, "on"))


@router.post("/{uuid}/reboot", response_model=InstanceResult)
def reboot_instance(uuid: Uuid, body: RebootRequest, runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.reboot(uuid, body.type))


@router.get("/{uuid}/console", response_model=Console)
def instance_console(uuid: Uuid, runtime: RuntimeDep) -> dict[str, Any]:
    console = runtime.compute.console(uuid)
    return {"type": console.type, "url": console.url}


@router.post("/{uuid}/nics", response_model=InstanceResult)
def add_nic(uuid: Uuid, body: NicRequest, runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.add_nic(uuid, body.port_id, body.mac, body.network_id,
                                                  qos_pps=body.qos_pps))


@router.delete("/{uuid}/nics/{port_id}", response_model=InstanceResult)
def remove_nic(uuid: Uuid, port_id: Annotated[str, IdPath], runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.remove_nic(uuid, port_id))


@router.post("/{uuid}/volumes", response_model=InstanceResult)
def add_volume(uuid: Uuid, body: VolumeRequest, runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.add_volume(uuid, body.volume_id, body.uri, body.bootable))


@router.delete("/{uuid}/volumes/{volume_id}", response_model=InstanceResult)
def remove_volume(uuid: Uuid, volume_id: Annotated[str, IdPath], runtime: RuntimeDep) -> dict[str, Any]:
    return _result(*runtime.compute.remove_volume(uuid, volume_id))
