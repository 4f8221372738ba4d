"""Volume and snapshot operations: create, extend and flatten a volume, take and delete a snapshot.

Each step calls the volume backend with no transaction open (data can be large) and records the
result in a transaction of its own afterwards, so a crash between the two resumes the step, whose
backend call is idempotent. A new volume becomes `available` only in the step after its data was
written; a failed create removes the data and leaves the volume in `error` with a fault.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dpustack.controller.orchestrator import Step, StepContext, readable, register
from dpustack.controller.services import snapshots, volumes
from dpustack.controller.services.volume_states import SnapshotStatus, VolumeStatus, at_rest
from dpustack.controller.volumebackend import ExportsLost, ImageSource
from dpustack.db.models import Image, Volume, VolumeSnapshot


def _volume(session: Session, ctx: StepContext) -> Volume:
    return session.get_one(Volume, ctx.params["volume_id"])


def _snapshot(session: Session, ctx: StepContext) -> VolumeSnapshot:
    return session.get_one(VolumeSnapshot, ctx.params["snapshot_id"])


def _fault(ctx: StepContext, step: str, message: str) -> dict[str, Any]:
    return {"message": message, "step": step, "operation_id": ctx.operation_id}


# -- create ----------------------------------------------------------------------------
def _write_data(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        volume = _volume(session, ctx)
        if volume.status != VolumeStatus.CREATING:
            return  # written and marked before a crash
        image = session.get(Image, volume.image_id) if volume.image_id else None
        size, snapshot_id = volume.size, volume.snapshot_id
    ctx.detail.update(volume=ctx.params["volume_id"], size=size, image=image.id if image else None,
                      snapshot=snapshot_id)
    ctx.context.volume_backend.create(ctx.params["volume_id"], size, ImageSource.of(image), snapshot_id=snapshot_id)


def _remove_data(ctx: StepContext) -> None:
    ctx.context.volume_backend.delete(ctx.params["volume_id"])


def _mark_available(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        volume = _volume(session, ctx)
        if volume.status == VolumeStatus.CREATING:
            volume.status, volume.fault = VolumeStatus.AVAILABLE, None


class CreateVolume:
    """Write a new volume's data, then say it is complete; a failure leaves no data and the volume `error`."""

    action, rollback = volumes.CREATE_ACTION, True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("write_data", _write_data, _remove_data),
                Step("mark_available", _mark_available)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        with ctx.transaction() as session:
            volume = _volume(session, ctx)
            volume.status, volume.fault = VolumeStatus.ERROR, _fault(ctx, step, message)


# -- extend and flatten ----------------------------------------------------------------------
def _extend(ctx: StepContext) -> None:
    size = ctx.params["size"]
    ctx.detail.update(volume=ctx.params["volume_id"], size=size)
    try:
        ctx.context.volume_backend.extend(ctx.params["volume_id"], size)
    except ExportsLost:
        _record_size(ctx, size)  # it grew; the failure handler tries to serve it again
        raise
    _record_size(ctx, size)
    _serve_attachment(ctx)
    _settle(ctx)


def _record_size(ctx: StepContext, size: int) -> None:
    with ctx.transaction() as session:
        _volume(session, ctx).size = size


def _serve_attachment(ctx: StepContext) -> None:
    """Export an attached volume again for its attachment (idempotent): a live extend drops the exports
    around the resize, and one cut short by a failure or a crash may not have put them back."""
    with ctx.transaction() as session:
        attachment_id = _volume(session, ctx).attachment_id
    if attachment_id is not None:
        ctx.context.volume_backend.export(ctx.params["volume_id"], attachment_id)


def _settle(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        volume = _volume(session, ctx)
        volume.status = at_rest(volume)


class ExtendVolume:
    """Grow a volume (live when it is attached). A failure leaves it usable and, if attached, served (at
    its old size, or the new one when it grew but lost an export); a volume that cannot be served again
    is `error`, its fault saying so, until the storage reconcile serves it."""

    action, rollback = volumes.EXTEND_ACTION, False

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("extend", _extend)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        try:
            _serve_attachment(ctx)
        except Exception as exc:  # whatever it is, the server has lost its disk: say so, never "in-use"
            with ctx.transaction() as session:
                volume = _volume(session, ctx)
                volume.status = VolumeStatus.ERROR
                volume.fault = _fault(ctx, step, f"{message}; the volume is not served to its server: "
                                                 f"{readable(exc)}")
            return
        _settle(ctx)


def _flatten(ctx: StepContext) -> None:
    ctx.context.volume_backend.flatten(ctx.params["volume_id"])
    with ctx.transaction() as session:
        volume = _volume(session, ctx)
        ctx.detail.update(volume=volume.id, image=volume.image_id, snapshot=volume.snapshot_id)
        volume.image_id = volume.snapshot_id = None


class FlattenVolume:
    """Copy into a volume the data it shares with its image or snapshot, which it no longer needs after."""

    action, rollback = volumes.FLATTEN_ACTION, False

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("flatten", _flatten)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """Nothing beyond the operation's error: the volume still shares its source's data, unharmed."""


# -- snapshots ----------------------------------------------------------------------------
def _take_snapshot(ctx: StepContext) -> None:
    """Take the snapshot; a resumed attempt first removes what an interrupted one may have left."""
    backend = ctx.context.volume_backend
    snapshot_id = ctx.params["snapshot_id"]
    with ctx.transaction() as session:
        snapshot = _snapshot(session, ctx)
        if snapshot.status != SnapshotStatus.CREATING:
            return  # taken and marked before a crash
        retried = ctx.data.get("snapshot_attempted", False)
        ctx.data["snapshot_attempted"] = True
        ctx.detail.update(volume=snapshot.volume_id, snapshot=snapshot.id, instance=snapshot.instance_id,
                          node=snapshot.node)
    if retried:
        backend.delete_snapshot(snapshot_id)
    backend.snapshot(ctx.params["volume_id"], snapshot_id)


def _remove_snapshot_data(ctx: StepContext) -> None:
    ctx.context.volume_backend.delete_snapshot(ctx.params["snapshot_id"])


def _mark_snapshot_available(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        snapshot = _snapshot(session, ctx)
        if snapshot.status == SnapshotStatus.CREATING:
            snapshot.status, snapshot.fault = SnapshotStatus.AVAILABLE, None


def _snapshot_failed(ctx: StepContext, step: str, message: str) -> None:
    with ctx.transaction() as session:
        snapshot = session.get(VolumeSnapshot, ctx.params["snapshot_id"])
        if snapshot is not None:
            snapshot.status, snapshot.fault = SnapshotStatus.ERROR, _fault(ctx, step, message)


class CreateSnapshot:
    """Take a snapshot (live when the volume is attached); a failure leaves no data and the snapshot `error`."""

    action, rollback = snapshots.CREATE_ACTION, True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("take_snapshot", _take_snapshot, _remove_snapshot_data),
                Step("mark_available", _mark_snapshot_available)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        _snapshot_failed(ctx, step, message)


def _remove_snapshot_record(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        snapshot = session.get(VolumeSnapshot, ctx.params["snapshot_id"])
        if snapshot is not None:
            session.delete(snapshot)


class DeleteSnapshot:
    """Remove a snapshot's data, then its record; a failure leaves it `error`, to be deleted again."""

    action, rollback = snapshots.DELETE_ACTION, False

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("delete_data", _remove_snapshot_data),
                Step("remove_record", _remove_snapshot_record)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        _snapshot_failed(ctx, step, message)


for _workflow in (CreateVolume(), ExtendVolume(), FlattenVolume(), CreateSnapshot(), DeleteSnapshot()):
    register(_workflow)
