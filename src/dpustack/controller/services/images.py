"""Images: metadata in the database, bytes in `$DPUSTACK_HOME/images/<id>`.

An upload is written to `<id>.part`, checked with qemu-img against the image's
`disk_format`, flushed, and only then renamed to `<id>`; a refused upload
leaves no file and the image `queued`, ready for another try.

Volumes made from an image are copy-on-write overlays on its file. Deleting an image no volume
shares removes it at once; deleting one that volumes share is an operation (`workflows/images.py`)
that flattens them, then removes it. The image is `deleting` meanwhile: no new volume or server is
made from it.
"""

from __future__ import annotations

from pathlib import Path
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dpustack.controller import orchestrator
from dpustack.controller.services import volumes
from dpustack.controller.services.common import Caller, ensure_unique_name, find
from dpustack.controller.services.volume_states import VolumeStatus
from dpustack.controller.storage import files, qemu_img
from dpustack.controller.volumebackend.base import image_path
from dpustack.db.models import Image, Operation, Volume
from dpustack.errors import Conflict, Forbidden, InvalidInput

DELETE_ACTION = "delete_image"
DELETING = "deleting"  # image status while its delete operation flattens the volumes sharing it

def _visible(caller: Caller):  # type: ignore[no-untyped-def]
    if caller.is_admin:
        return None
    return or_(Image.project_id == caller.project_id, Image.visibility == "public")


def create_image(session: Session, caller: Caller, *, name: str, visibility: str, disk_format: str = "raw") -> Image:
    if visibility == "public":
        caller.require_admin()
    ensure_unique_name(session, Image, name, caller.project_id, kind="image")
    image = Image(name=name, project_id=caller.project_id, visibility=visibility, disk_format=disk_format)
    session.add(image)
    session.flush()
    return image


def get_image(session: Session, caller: Caller, ref: str, *, field: str = "image") -> Image:
    visible = _visible(caller)
    return find(session, Image, ref, None, kind="image", field=field, extra=visible)


def list_images(session: Session, caller: Caller) -> list[Image]:
    query = select(Image).order_by(Image.created_at)
    visible = _visible(caller)
    if visible is not None:
        query = query.where(visible)
    return list(session.scalars(query))


def upload_path(images_dir: Path, image_id: str) -> Path:
    """Where an upload is written until it is checked and complete."""
    return files.partial_path(image_path(images_dir, image_id))


def check_upload(path: Path, *, name: str, disk_format: str, size: int) -> qemu_img.ImageInfo:
    """What qemu-img finds in an uploaded file, if it is the non-empty `disk_format` image it claims to be.

    Raises InvalidInput naming `disk_format` when the detected format differs,
    or `file` when the file is empty, unreadable, shows a disk of no bytes, or
    refers to other files (a qcow2 backing file or external data file would
    make whoever opens it read a file of the controller's host; volumes are
    copy-on-write overlays on the image, so it must stand alone).
    """
    if size == 0:
        raise InvalidInput(f"the upload for image '{name}' is empty: an image needs data", field="file")
    try:
        found = qemu_img.info(path)
    except qemu_img.QemuImgError as exc:
        raise InvalidInput(f"qemu-img cannot read the upload for image '{name}': {exc.message}",
                           field="file") from exc
    if found.format != disk_format:
        raise InvalidInput(f"the upload is a {found.format} image but image '{name}' has disk_format "
                           f"'{disk_format}'", field="disk_format")
    if found.virtual_size <= 0:
        raise InvalidInput(f"the upload for image '{name}' is a {found.format} image of a disk of no bytes",
                           field="file")
    if found.backing_file:
        raise InvalidInput(f"the upload names a backing file ({found.backing_file}); images must stand alone",
                           field="file")
    if found.data_file:
        raise InvalidInput(f"the upload names an external data file ({found.data_file}); images must stand "
                           "alone", field="file")
    return found


def store_upload(images_dir: Path, image_id: str, *, name: str, disk_format: str,
                 size: int) -> qemu_img.ImageInfo:
    """Check the finished upload of `image_id` and make it the image's data (flushed, then renamed).

    A refused or failed upload is removed; the caller puts the image back to `queued`.
    """
    partial = upload_path(images_dir, image_id)
    try:
        found = check_upload(partial, name=name, disk_format=disk_format, size=size)
        files.publish(partial, image_path(images_dir, image_id))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return found


def check_owner(caller: Caller, image: Image) -> None:
    if not caller.is_admin and image.project_id != caller.project_id:
        raise Forbidden(f"image '{image.name}' belongs to another project", field="image")


def sharing_volumes(session: Session, image_id: str) -> list[Volume]:
    """The volumes that share the image's data (made from it and not flattened since), oldest first."""
    return list(session.scalars(select(Volume).where(Volume.image_id == image_id).order_by(Volume.created_at)))


def remove_image(session: Session, images_dir: Path, image: Image) -> None:
    """Delete the image's record and file (nothing may share them any more)."""
    session.delete(image)
    files.remove(image_path(images_dir, image.id))


def delete_image(session: Session, caller: Caller, images_dir: Path, ref: str) -> Operation | None:
    """Delete the image at once (None) or, while volumes share it, submit the operation that flattens
    them and then deletes it; the image is `deleting` meanwhile and each volume held by the operation
    (a volume busy with another operation, or still being created, is a 409 that changes nothing)."""
    image = get_image(session, caller, ref)
    check_owner(caller, image)
    if image.status == "saving":
        raise Conflict(f"image '{image.name}' is being uploaded; delete it when the upload ends", field="image")
    if image.status == DELETING:
        raise Conflict(f"image '{image.name}' is already being deleted", field="image")
    sharing = sharing_volumes(session, image.id)
    if not sharing:
        remove_image(session, images_dir, image)
        return None
    if creating := [v.name for v in sharing if v.status == VolumeStatus.CREATING]:
        raise Conflict(f"image '{image.name}' is being copied into volumes ({', '.join(creating)}); delete it "
                       "when they are created", field="volume")
    operation = orchestrator.submit(session, action=DELETE_ACTION, project_id=image.project_id, instance_id=None,
                                    params={"image_id": image.id, "volume_ids": [v.id for v in sharing]})
    for volume in sharing:
        volumes.hold(session, volume, operation)
    image.status = DELETING
    return operation
