"""Snapshots of volumes: point-in-time copies kept by the volume backend, sources for new volumes.

A snapshot of an attached volume is taken live (its export stays up); it records the instance
using the volume and that instance's node. Taking and deleting one are operations
(`workflows/volumes.py`) that hold the volume, so its data does not change under them otherwise.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller import orchestrator
from dpustack.controller.services import volumes
from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.controller.services.volume_states import DELETABLE_SNAPSHOT, SnapshotStatus
from dpustack.db.models import Operation, Volume, VolumeSnapshot
from dpustack.errors import Conflict

CREATE_ACTION, DELETE_ACTION = "create_snapshot", "delete_snapshot"


def get_snapshot(session: Session, caller: Caller, ref: str, *, field: str = "snapshot") -> VolumeSnapshot:
    return find(session, VolumeSnapshot, ref, caller, kind="snapshot", field=field)


def list_snapshots(session: Session, caller: Caller, volume: Volume | None = None) -> list[VolumeSnapshot]:
    """The snapshots the caller may see (of `volume` only, if given), oldest first."""
    query = scoped(select(VolumeSnapshot), VolumeSnapshot, caller)
    if volume is not None:
        query = query.where(VolumeSnapshot.volume_id == volume.id)
    return list(session.scalars(query.order_by(VolumeSnapshot.created_at)))


def create_snapshot(session: Session, caller: Caller, volume_ref: str, *, name: str) -> VolumeSnapshot:
    """Record a snapshot of the volume (`creating`, in the volume's project) and submit taking it."""
    volume = volumes.get_volume(session, caller, volume_ref)
    volumes.check_changeable(volume, "snapshot")
    ensure_unique_name(session, VolumeSnapshot, name, volume.project_id, kind="snapshot")
    snapshot = VolumeSnapshot(name=name, project_id=volume.project_id, volume_id=volume.id, size=volume.size,
                              status=SnapshotStatus.CREATING, instance_id=volume.instance_id,
                              node=volume.attached_node)
    session.add(snapshot)
    session.flush()
    operation = orchestrator.submit(session, action=CREATE_ACTION, project_id=volume.project_id, instance_id=None,
                                    params={"snapshot_id": snapshot.id, "volume_id": volume.id})
    volumes.hold(session, volume, operation)
    volumes.hold(session, snapshot, operation)
    return snapshot


def delete_snapshot(session: Session, caller: Caller, ref: str) -> Operation:
    """Submit deleting a snapshot; refused while volumes still share its data."""
    snapshot = get_snapshot(session, caller, ref)
    if snapshot.status not in DELETABLE_SNAPSHOT:
        raise Conflict(f"snapshot '{snapshot.name}' is {snapshot.status}", field="snapshot")
    users = list(session.scalars(select(Volume.name).where(Volume.snapshot_id == snapshot.id)
                                 .order_by(Volume.created_at)))
    if users:
        raise Conflict(f"snapshot '{snapshot.name}' is shared by volumes made from it ({', '.join(users)}); "
                       "flatten or delete them first", field="snapshot")
    operation = orchestrator.submit(session, action=DELETE_ACTION, project_id=snapshot.project_id, instance_id=None,
                                    params={"snapshot_id": snapshot.id, "volume_id": snapshot.volume_id})
    volumes.hold(session, snapshot, operation)
    volumes.hold(session, session.get_one(Volume, snapshot.volume_id), operation)
    snapshot.status = SnapshotStatus.DELETING
    return operation
