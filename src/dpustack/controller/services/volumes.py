"""Volumes: raw, sparse files under `$DPUSTACK_HOME/volumes`, optionally filled from an image.

The agent receives a volume as a URI (`file://…`) and binds it to a storage
function on the DPU. A volume's data is written to `<id>.img.part`, flushed,
and renamed to `<id>.img`; only then does the volume leave status `creating`.
So a volume in any other status has complete data, and a `creating` one (left
by a crash) has at most a partial file, which writing it again replaces.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.controller.services.images import image_path
from dpustack.controller.storage import files, qemu_img
from dpustack.db.models import Image, Volume
from dpustack.errors import Conflict, InvalidInput

GiB = 1 << 30
CREATING = "creating"  # the row exists, the data may not be complete yet


@dataclass(frozen=True)
class VolumeDirs:
    """Where image and volume bytes live."""

    images: Path
    volumes: Path


@dataclass(frozen=True)
class ImageSource:
    """The image a volume is filled from, as plain values (usable outside a database session)."""

    image_id: str
    disk_format: str

    @classmethod
    def of(cls, image: Image | None) -> "ImageSource | None":
        return None if image is None else cls(image.id, image.disk_format)


def volume_path(volumes_dir: Path, volume_id: str) -> Path:
    return volumes_dir / f"{volume_id}.img"


def volume_uri(volumes_dir: Path, volume_id: str) -> str:
    return volume_path(volumes_dir, volume_id).as_uri()


def check_image_fits(image: Image, size: int, *, field: str) -> None:
    """An image needs data, and its disk (not its file) must fit in `size` GiB."""
    if image.status != "active":
        raise Conflict(f"image '{image.name}' has no data yet (status {image.status})", field="image")
    if image.virtual_size > size * GiB:
        raise InvalidInput(f"image '{image.name}' ({image.virtual_size} bytes of disk) does not fit in {size} GiB",
                           field=field)


def create_volume(session: Session, caller: Caller, dirs: VolumeDirs, *, name: str, size: int,
                  image: Image | None = None, bootable: bool = False,
                  delete_on_termination: bool = False, write_file: bool = True) -> Volume:
    """Create a volume record and, unless told not to, its data (copied from `image`).

    Without `write_file` the volume stays `creating`: the caller writes the
    data with `write_volume_file` and then gives the volume its next status.
    """
    ensure_unique_name(session, Volume, name, caller.project_id, kind="volume")
    if image is not None:
        check_image_fits(image, size, field="size")
    volume = Volume(name=name, project_id=caller.project_id, size=size, status=CREATING,
                    image_id=image.id if image else None, bootable=bootable or image is not None,
                    delete_on_termination=delete_on_termination)
    session.add(volume)
    session.flush()
    if write_file:
        write_volume_file(dirs, volume.id, size, ImageSource.of(image))
        volume.status = "available"
    return volume


def write_volume_file(dirs: VolumeDirs, volume_id: str, size: int, image: ImageSource | None) -> None:
    """Write the volume's data (the image's disk, then zeros up to `size` GiB) under its final name.

    Idempotent: a partial file from an earlier, interrupted attempt is
    discarded and the data written again in full.
    """
    target = volume_path(dirs.volumes, volume_id)
    partial = files.partial_path(target)
    partial.unlink(missing_ok=True)
    try:
        if image is None:
            partial.touch()
        elif image.disk_format == "raw":
            shutil.copyfile(image_path(dirs.images, image.image_id), partial)
        else:  # volumes are raw files: other formats are converted
            qemu_img.convert_to_raw(image_path(dirs.images, image.image_id), image.disk_format, partial)
        with open(partial, "ab") as handle:
            handle.truncate(size * GiB)  # sparse: costs no disk until written
        files.publish(partial, target)
    except (OSError, qemu_img.QemuImgError) as exc:
        partial.unlink(missing_ok=True)
        reason = exc.message if isinstance(exc, qemu_img.QemuImgError) else exc.strerror or exc
        raise InvalidInput(f"cannot create a {size} GiB volume: {reason}", field="size") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_volume_file(dirs: VolumeDirs, volume_id: str) -> None:
    """Remove the volume's data, complete or partial."""
    files.remove(volume_path(dirs.volumes, volume_id))


def get_volume(session: Session, caller: Caller, ref: str, *, field: str = "volume") -> Volume:
    return find(session, Volume, ref, caller, kind="volume", field=field)


def list_volumes(session: Session, caller: Caller) -> list[Volume]:
    return list(session.scalars(scoped(select(Volume), Volume, caller).order_by(Volume.created_at)))


def delete_volume(session: Session, caller: Caller, dirs: VolumeDirs, ref: str) -> None:
    volume = get_volume(session, caller, ref)
    if volume.instance_id or volume.status != "available":
        raise Conflict(f"volume '{volume.name}' is {volume.status}; detach it first", field="volume")
    session.delete(volume)
    session.flush()
    remove_volume_file(dirs, volume.id)
