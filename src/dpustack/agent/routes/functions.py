"""Host functions made directly: net PFs/VFs and storage devices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from dpustack.agent.routes.deps import IdPath, ServiceDep
from dpustack.agent.schemas import FunctionCreate, FunctionOut, StorageDeviceCreate
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1", tags=["functions"], responses=error_responses(502))
FunctionId = Annotated[str, IdPath]


@router.post("/functions", response_model=FunctionOut, status_code=201)
def create_function(body: FunctionCreate, service: ServiceDep) -> dict[str, Any]:
    return service.devices.create_function(body)


@router.get("/functions", response_model=list[FunctionOut])
def list_functions(service: ServiceDep) -> list[dict[str, Any]]:
    return service.devices.functions()


@router.get("/functions/{function_id}", response_model=FunctionOut)
def get_function(function_id: FunctionId, service: ServiceDep) -> dict[str, Any]:
    return service.devices.function(function_id)


@router.delete("/functions/{function_id}", status_code=204)
def delete_function(function_id: FunctionId, service: ServiceDep) -> Response:
    service.devices.delete_function(function_id)
    return Response(status_code=204)


@router.post("/storage-devices", response_model=FunctionOut, status_code=201)
def create_storage_device(body: StorageDeviceCreate, service: ServiceDep) -> dict[str, Any]:
    return service.devices.create_storage_device(body)


@router.delete("/storage-devices/{function_id}", status_code=204)
def delete_storage_device(function_id: FunctionId, service: ServiceDep) -> Response:
    service.devices.delete_storage_device(function_id)
    return Response(status_code=204)
