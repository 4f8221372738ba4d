"""Snapshots of volumes (taken with POST /v1/volumes/{ref}/snapshots)."""

from __future__ import annotations

from fastapi import APIRouter

from dpustack.api.deps import CallerDep, ContextDep, OrchestratorDep
from dpustack.api.routers.operations import accept
from dpustack.api.schemas import OperationPublic, SnapshotPublic
from dpustack.controller.services import snapshots

router = APIRouter(prefix="/snapshots", tags=["volumes"])


@router.get("", response_model=list[SnapshotPublic])
def list_snapshots(context: ContextDep, caller: CallerDep) -> list[SnapshotPublic]:
    with context.transaction() as session:
        return [SnapshotPublic.model_validate(s) for s in snapshots.list_snapshots(session, caller)]


@router.get("/{ref}", response_model=SnapshotPublic)
def show_snapshot(ref: str, context: ContextDep, caller: CallerDep) -> SnapshotPublic:
    with context.transaction() as session:
        return SnapshotPublic.model_validate(snapshots.get_snapshot(session, caller, ref))


@router.delete("/{ref}", response_model=OperationPublic, status_code=202)
def delete_snapshot(ref: str, context: ContextDep, caller: CallerDep,
                    orchestrator: OrchestratorDep) -> OperationPublic:
    """Delete a snapshot: refused (409) while volumes made from it still share its data."""
    return accept(context, orchestrator, lambda s: snapshots.delete_snapshot(s, caller, ref))
