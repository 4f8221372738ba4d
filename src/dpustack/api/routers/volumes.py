"""Volumes: every change of a volume's data answers 202 with the operation carrying it out (a new
volume, or snapshot, is answered itself, naming its operation)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from dpustack.api.deps import CallerDep, ContextDep, OrchestratorDep
from dpustack.api.routers.operations import accept, accept_as
from dpustack.api.schemas import (OperationPublic, SnapshotCreate, SnapshotPublic, VolumeCreate, VolumeExtend,
                                  VolumePublic)
from dpustack.controller.services import images, snapshots, volumes
from dpustack.db.models import Volume
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/volumes", tags=["volumes"])


@router.post("", response_model=VolumePublic, status_code=202, responses=error_responses(404))
def create_volume(body: VolumeCreate, context: ContextDep, caller: CallerDep,
                  orchestrator: OrchestratorDep) -> VolumePublic:
    """A new volume, `creating` until its operation (`operation_id`) has written its data."""
    def submit(session: Session) -> Volume:
        image = images.get_image(session, caller, body.image) if body.image else None
        snapshot = snapshots.get_snapshot(session, caller, body.snapshot) if body.snapshot else None
        return volumes.create_volume(session, caller, name=body.name, size=body.size, image=image,
                                     snapshot=snapshot)
    return accept_as(context, orchestrator, submit, VolumePublic.model_validate)


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
    """Delete a volume and its data: refused (409) while it is attached, busy or has snapshots."""
    with context.transaction() as session:
        volumes.delete_volume(session, caller, context.volume_backend, ref)
    return Response(status_code=204)


@router.post("/{ref}/extend", response_model=OperationPublic, status_code=202)
def extend_volume(ref: str, body: VolumeExtend, context: ContextDep, caller: CallerDep,
                  orchestrator: OrchestratorDep) -> OperationPublic:
    """Grow the volume to `size` GiB, attached or not (`extending` meanwhile)."""
    return accept(context, orchestrator, lambda s: volumes.extend_volume(s, caller, ref, body.size))


@router.post("/{ref}/flatten", response_model=OperationPublic, status_code=202)
def flatten_volume(ref: str, context: ContextDep, caller: CallerDep,
                   orchestrator: OrchestratorDep) -> OperationPublic:
    """Copy in the data the volume shares with its image or snapshot, so that it no longer needs them."""
    return accept(context, orchestrator, lambda s: volumes.flatten_volume(s, caller, ref))


@router.post("/{ref}/snapshots", response_model=SnapshotPublic, status_code=202)
def create_snapshot(ref: str, body: SnapshotCreate, context: ContextDep, caller: CallerDep,
                    orchestrator: OrchestratorDep) -> SnapshotPublic:
    """A snapshot of the volume (taken live if it is attached), `creating` until its operation ends."""
    return accept_as(context, orchestrator, lambda s: snapshots.create_snapshot(s, caller, ref, name=body.name),
                     SnapshotPublic.model_validate)


@router.get("/{ref}/snapshots", response_model=list[SnapshotPublic])
def list_volume_snapshots(ref: str, context: ContextDep, caller: CallerDep) -> list[SnapshotPublic]:
    with context.transaction() as session:
        volume = volumes.get_volume(session, caller, ref)
        return [SnapshotPublic.model_validate(s) for s in snapshots.list_snapshots(session, caller, volume)]
