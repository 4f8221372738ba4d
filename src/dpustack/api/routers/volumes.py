"""Volumes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.api.deps import CallerDep, ContextDep
from dpustack.api.schemas import VolumeCreate, VolumePublic
from dpustack.controller.services import images, volumes
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/volumes", tags=["volumes"])


@router.post("", response_model=VolumePublic, status_code=201, responses=error_responses(404))
def create_volume(body: VolumeCreate, context: ContextDep, caller: CallerDep) -> VolumePublic:
    with context.transaction() as session:
        image = images.get_image(session, caller, body.image) if body.image else None
        volume = volumes.create_volume(session, caller, context.volume_backend, name=body.name,
                                       size=body.size, image=image)
        return VolumePublic.model_validate(volume)


@router.get("", response_model=list[VolumePublic])
def list_volumes(context: ContextDep, caller: CallerDep) -> list[VolumePublic]:
    with context.transaction() as session:
        return [VolumePublic.model_validate(v) for v in volumes.list_volumes(session, caller)]


@router.get("/{ref}", response_model=VolumePublic)
def show_volume(ref: str, context: ContextDep, caller: CallerDep) -> VolumePublic:
    with context.transaction() as session:
        return VolumePublic.model_validate(volumes.get_volume(session, caller, ref))


@router.delete("/{ref}", status_code=204)
def delete_volume(ref: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        volumes.delete_volume(session, caller, context.volume_backend, ref)
    return Response(status_code=204)
