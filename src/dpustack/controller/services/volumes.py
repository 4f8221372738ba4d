"""Volumes: their records, the checks made before any change, and the operations that change their data.

A volume's data is kept by the controller's volume backend (`volumebackend`). The agent of the node
a volume is attached to receives the backend's export of it (a URI, one export per attachment) and
binds it to a storage function on the DPU.

Every change to a volume's data is an operation (`workflows/volumes.py`; boot volumes: the build
workflow). A request checks everything first, so a refused one changes nothing, then records what
the user sees at once (a new volume `creating`) with the operation, which calls the backend. A
volume stays `creating` until the backend's `create` has returned, so a volume in any other status
has complete data; a create interrupted by a crash is resumed and writes the data again, replacing
what the interrupted attempt left. While an operation works on a volume it holds it
(`operation_id`): another change is a 409 until it ends.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from dpustack.controller import orchestrator
from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.controller.services.volume_states import CHANGEABLE, DELETABLE, SnapshotStatus, VolumeStatus
from dpustack.controller.volumebackend import GiB, VolumeBackend
from dpustack.db.models import Image, Instance, Operation, Volume, VolumeSnapshot, new_id
from dpustack.errors import Conflict, InvalidInput
from dpustack.instance_states import MOVING

CREATE_ACTION, EXTEND_ACTION, FLATTEN_ACTION = "create_volume", "extend_volume", "flatten_volume"


def check_image_fits(image: Image, size: int, *, field: str) -> None:
    """An image needs data and must not be being deleted, and its disk (not its file) must fit in `size` GiB."""
    if image.status == "deleting":
        raise Conflict(f"image '{image.name}' is being deleted", field="image")
    if image.status != "active":
        raise Conflict(f"image '{image.name}' has no data yet (status {image.status})", field="image")
    if image.virtual_size > size * GiB:
        raise InvalidInput(f"image '{image.name}' ({image.virtual_size} bytes of disk) does not fit in {size} GiB",
                           field=field)


def gib_holding(size_bytes: int) -> int:
    """The smallest whole number of GiB (at least 1) that holds `size_bytes`."""
    return max(1, -(-size_bytes // GiB))


def new_volume(session: Session, owner: Caller, *, name: str, size: int, image: Image | None = None,
               snapshot: VolumeSnapshot | None = None, bootable: bool = False,
               delete_on_termination: bool = False) -> Volume:
    """The record of a volume whose data is still to be written (`creating`), in the owner's project."""
    ensure_unique_name(session, Volume, name, owner.project_id, kind="volume")
    source_bootable = snapshot is not None and session.get_one(Volume, snapshot.volume_id).bootable
    volume = Volume(name=name, project_id=owner.project_id, size=size, status=VolumeStatus.CREATING,
                    image_id=image.id if image else None, snapshot_id=snapshot.id if snapshot else None,
                    bootable=bootable or image is not None or source_bootable,
                    delete_on_termination=delete_on_termination)
    session.add(volume)
    session.flush()
    return volume


def _size_from_source(size: int | None, image: Image | None, snapshot: VolumeSnapshot | None) -> int:
    """The size asked for, or the source's; checked against the source."""
    if image is not None and snapshot is not None:
        raise InvalidInput("give an image or a snapshot to fill the volume from, not both", field="snapshot")
    if snapshot is not None:
        if snapshot.status != SnapshotStatus.AVAILABLE:
            raise Conflict(f"snapshot '{snapshot.name}' is {snapshot.status}", field="snapshot")
        if size is not None and size < snapshot.size:
            raise InvalidInput(f"a volume from snapshot '{snapshot.name}' needs at least its {snapshot.size} GiB",
                               field="size")
        return snapshot.size if size is None else size
    if image is not None:
        size = gib_holding(image.virtual_size) if size is None else size
        check_image_fits(image, size, field="size")
        return size
    if size is None:
        raise InvalidInput("give the size (GiB) of an empty volume", field="size")
    return size


def create_volume(session: Session, caller: Caller, *, name: str, size: int | None, image: Image | None = None,
                  snapshot: VolumeSnapshot | None = None) -> Volume:
    """Record a volume (`creating`) and submit the operation that writes its data: empty, copy-on-write
    from `image` or from `snapshot`. `size` defaults to the source's (the image's disk rounded up to
    whole GiB)."""
    size = _size_from_source(size, image, snapshot)
    volume = new_volume(session, caller, name=name, size=size, image=image, snapshot=snapshot)
    hold(session, volume, orchestrator.submit(session, action=CREATE_ACTION, project_id=volume.project_id,
                                              instance_id=None, params={"volume_id": volume.id}))
    return volume


def get_volume(session: Session, caller: Caller, ref: str, *, field: str = "volume") -> Volume:
    return find(session, Volume, ref, caller, kind="volume", field=field)


def list_volumes(session: Session, caller: Caller) -> list[Volume]:
    return list(session.scalars(scoped(select(Volume), Volume, caller).order_by(Volume.created_at)))


def hold(session: Session, row: Volume | VolumeSnapshot, operation: Operation) -> None:
    """Mark a volume or snapshot as changed by `operation` (the orchestrator frees it when the operation
    ends); one another operation holds is a 409."""
    kind = "volume" if isinstance(row, Volume) else "snapshot"
    model = type(row)
    session.flush()
    held = session.execute(update(model).where(model.id == row.id, model.operation_id.is_(None))
                           .values(operation_id=operation.id).execution_options(synchronize_session=False))
    if held.rowcount != 1:  # type: ignore[attr-defined]
        busy = session.scalar(select(model.operation_id).where(model.id == row.id))
        raise Conflict(f"{kind} '{row.name}' is busy with operation {busy}; try again when it ends", field=kind)
    set_committed_value(row, "operation_id", operation.id)


def check_changeable(volume: Volume, action: str) -> None:
    if volume.status not in CHANGEABLE:
        raise Conflict(f"cannot {action} volume '{volume.name}' in status {volume.status}", field="volume")


def extend_volume(session: Session, caller: Caller, ref: str, size: int) -> Operation:
    """Submit growing the volume to `size` GiB (attached or not); it is `extending` meanwhile."""
    volume = get_volume(session, caller, ref)
    check_changeable(volume, "extend")
    if size <= volume.size:
        raise InvalidInput(f"volume '{volume.name}' already has {volume.size} GiB: give a larger size", field="size")
    operation = orchestrator.submit(session, action=EXTEND_ACTION, project_id=volume.project_id, instance_id=None,
                                    params={"volume_id": volume.id, "size": size})
    hold(session, volume, operation)
    volume.status = VolumeStatus.EXTENDING
    return operation


def flatten_volume(session: Session, caller: Caller, ref: str) -> Operation:
    """Submit copying into the volume the data it shares with its image or snapshot (attached or not)."""
    volume = get_volume(session, caller, ref)
    check_changeable(volume, "flatten")
    if volume.image_id is None and volume.snapshot_id is None:
        raise Conflict(f"volume '{volume.name}' shares no data with an image or a snapshot: nothing to flatten",
                       field="volume")
    operation = orchestrator.submit(session, action=FLATTEN_ACTION, project_id=volume.project_id, instance_id=None,
                                    params={"volume_id": volume.id})
    hold(session, volume, operation)
    return operation


def snapshot_names(session: Session, volume: Volume) -> list[str]:
    return list(session.scalars(select(VolumeSnapshot.name).where(VolumeSnapshot.volume_id == volume.id)
                                .order_by(VolumeSnapshot.created_at)))


def delete_volume(session: Session, caller: Caller, backend: VolumeBackend, ref: str) -> None:
    """Delete a volume and its data; refused while attached, busy, or with snapshots of it."""
    volume = get_volume(session, caller, ref)
    if volume.instance_id or volume.status not in DELETABLE:
        raise Conflict(f"volume '{volume.name}' is {volume.status}; detach it first", field="volume")
    if snapshots := snapshot_names(session, volume):
        raise Conflict(f"volume '{volume.name}' has snapshots ({', '.join(snapshots)}); delete them first",
                       field="volume")
    gone = session.execute(delete(Volume).where(Volume.id == volume.id, Volume.operation_id.is_(None))
                           .execution_options(synchronize_session=False))
    if gone.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"volume '{volume.name}' is busy; try again when its operation ends", field="volume")
    session.expunge(volume)
    backend.delete(volume.id)


# -- attachments ---------------------------------------------------------------------
def attachment_of(volume: Volume) -> str:
    """The volume's attachment id (its export's name), made for a new attachment."""
    if volume.attachment_id is None:
        volume.attachment_id = new_id()
    return volume.attachment_id


def record_attachment(volume: Volume, *, node: str, function_id: str, bdf: str | None) -> None:
    """The node's agent attached the volume: where it is served from."""
    volume.attached_node, volume.function_id, volume.bdf = node, function_id, bdf
    volume.status = VolumeStatus.IN_USE


def end_attachment(backend: VolumeBackend, volume: Volume) -> None:
    """Stop serving the volume's attachment (after the node let go) and forget where it was attached; a
    second attachment of a move ends too."""
    end_move_attachment(backend, volume)
    if volume.attachment_id is not None:
        backend.unexport(volume.attachment_id)
    volume.attachment_id = volume.attached_node = volume.function_id = volume.bdf = None


# -- the second attachment of a move -------------------------------------------------
# A volume is attached on one node at a time, but for one window: while its instance moves to another node
# (a cold migration or its revert), the node it moves to attaches it before the node it leaves lets go, so
# that the instance can be built there on the same volumes and a failure finds the old attachment whole.
# The instance is stopped on the node it leaves meanwhile, so only one side reads or writes the volume.
def move_attachment_id(volume: Volume, instance: Instance, *, source_power: str, live: bool = False) -> str:
    """The attachment id (its export's name) of the volume on the node `instance` moves to, made the first
    time. Conflict naming `volume` unless the volume is the instance's, the instance is moving (MIGRATING,
    REVERT_MIGRATE) and it is off on the node it leaves (`source_power`, as that node answered), or moves
    `live` (its guest's disk is written by one QEMU at a time: the target's starts at the switch-over)."""
    if volume.instance_id != instance.id or instance.status not in MOVING:
        raise Conflict(f"volume '{volume.name}' may be attached on a second node only while its instance moves "
                       f"there (instance status {instance.status})", field="volume")
    if source_power != "off" and not live:
        raise Conflict(f"volume '{volume.name}' may be attached on a second node only while its instance is off "
                       f"on the node it leaves (it is {source_power} there)", field="volume")
    if volume.move_attachment is None:
        volume.move_attachment = {"attachment_id": new_id(), "node": None, "function_id": None, "bdf": None}
    return str(volume.move_attachment["attachment_id"])


def record_move_attachment(volume: Volume, *, node: str, function_id: str, bdf: str | None) -> None:
    """The node the instance moves to attached the volume: where it is served from there."""
    assert volume.move_attachment is not None, "move_attachment_id names the attachment first"
    volume.move_attachment = {**volume.move_attachment, "node": node, "function_id": function_id, "bdf": bdf}


def end_move_attachment(backend: VolumeBackend, volume: Volume) -> None:
    """Stop serving the second attachment (its node let go: a move undone) and forget it."""
    if volume.move_attachment is not None:
        backend.unexport(volume.move_attachment["attachment_id"])
    volume.move_attachment = None


def switch_to_move_attachment(backend: VolumeBackend, volume: Volume) -> None:
    """The node the instance left let go of the volume: its attachment ends and the second one is the
    volume's attachment from now on. Nothing to do when there is no second one (switched already)."""
    moved = volume.move_attachment
    if moved is None:
        return
    if volume.attachment_id is not None:
        backend.unexport(volume.attachment_id)
    volume.attachment_id, volume.attached_node = moved["attachment_id"], moved["node"]
    volume.function_id, volume.bdf = moved["function_id"], moved["bdf"]
    volume.move_attachment = None
