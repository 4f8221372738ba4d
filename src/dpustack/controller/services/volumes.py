"""Volumes: raw, sparse files under `$DPUSTACK_HOME/volumes`, optionally filled from an image.

The agent receives a volume as a URI (`file://…`) and binds it to a storage
function on the DPU.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.controller.services.images import image_path
from dpustack.db.models import Image, Volume
from dpustack.errors import Conflict, InvalidInput

GiB = 1 << 30


@dataclass(frozen=True)
class VolumeDirs:
    """Where image and volume bytes live."""

    images: Path
    volumes: Path


def volume_path(volumes_dir: Path, volume_id: str) -> Path:
    return volumes_dir / f"{volume_id}.img"


def volume_uri(volumes_dir: Path, volume_id: str) -> str:
    return volume_path(volumes_dir, volume_id).as_uri()


def create_volume(session: Session, caller: Caller, dirs: VolumeDirs, *, name: str, size: int,
                  image: Image | None = None, bootable: bool = False,
                  delete_on_termination: bool = False, write_file: bool = True) -> Volume:
    """Create a volume record and, unless told not to, its backing file (copied from `image`)."""
    ensure_unique_name(session, Volume, name, caller.project_id, kind="volume")
    if image is not None:
        if image.status != "active":
            raise Conflict(f"image '{image.name}' has no data yet (status {image.status})", field="image")
        if image.size > size * GiB:
            raise InvalidInput(f"image '{image.name}' ({image.size} bytes) does not fit in {size} GiB",
                               field="size")
    volume = Volume(name=name, project_id=caller.project_id, size=size, status="available",
                    image_id=image.id if image else None, bootable=bootable or image is not None,
                    delete_on_termination=delete_on_termination)
    session.add(volume)
    session.flush()
    if write_file:
        write_volume_file(dirs, volume.id, size, volume.image_id)
    return volume


def write_volume_file(dirs: VolumeDirs, volume_id: str, size: int, image_id: str | None) -> None:
    target = volume_path(dirs.volumes, volume_id)
    try:
        if image_id is not None:
            shutil.copyfile(image_path(dirs.images, image_id), target)
        with open(target, "ab") as handle:
            handle.truncate(size * GiB)  # sparse: costs no disk until written
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise InvalidInput(f"cannot create a {size} GiB volume: {exc.strerror or exc}", field="size") from exc


def remove_volume_file(dirs: VolumeDirs, volume_id: str) -> None:
    volume_path(dirs.volumes, volume_id).unlink(missing_ok=True)


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
