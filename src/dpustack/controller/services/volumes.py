"""Volumes: their records, and their data kept by the controller's volume backend (`volumebackend`).

The agent receives a volume as the backend's URI and binds it to a storage
function on the DPU. A volume's record is written first, in status
`creating`; it leaves that status only once the backend's `create` has
returned. So a volume in any other status has complete data, and a
`creating` one (left by a crash) has at most partial data, which creating
it again replaces.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.controller.volumebackend import GiB, ImageSource, VolumeBackend
from dpustack.db.models import Image, Volume
from dpustack.errors import Conflict, InvalidInput

CREATING = "creating"  # the row exists, the data may not be complete yet


def check_image_fits(image: Image, size: int, *, field: str) -> None:
    """An image needs data, and its disk (not its file) must fit in `size` GiB."""
    if image.status != "active":
        raise Conflict(f"image '{image.name}' has no data yet (status {image.status})", field="image")
    if image.virtual_size > size * GiB:
        raise InvalidInput(f"image '{image.name}' ({image.virtual_size} bytes of disk) does not fit in {size} GiB",
                           field=field)


def create_volume(session: Session, caller: Caller, backend: VolumeBackend, *, name: str, size: int,
                  image: Image | None = None, bootable: bool = False,
                  delete_on_termination: bool = False, write_data: bool = True) -> Volume:
    """Create a volume record and, unless told not to, its data (copied from `image`).

    Without `write_data` the volume stays `creating`: the caller writes the
    data with the backend's `create` and then gives the volume its next status.
    """
    ensure_unique_name(session, Volume, name, caller.project_id, kind="volume")
    if image is not None:
        check_image_fits(image, size, field="size")
    volume = Volume(name=name, project_id=caller.project_id, size=size, status=CREATING,
                    image_id=image.id if image else None, bootable=bootable or image is not None,
                    delete_on_termination=delete_on_termination)
    session.add(volume)
    session.flush()
    if write_data:
        backend.create(volume.id, size, ImageSource.of(image))
        volume.status = "available"
    return volume


def get_volume(session: Session, caller: Caller, ref: str, *, field: str = "volume") -> Volume:
    return find(session, Volume, ref, caller, kind="volume", field=field)


def list_volumes(session: Session, caller: Caller) -> list[Volume]:
    return list(session.scalars(scoped(select(Volume), Volume, caller).order_by(Volume.created_at)))


def delete_volume(session: Session, caller: Caller, backend: VolumeBackend, ref: str) -> None:
    volume = get_volume(session, caller, ref)
    if volume.instance_id or volume.status != "available":
        raise Conflict(f"volume '{volume.name}' is {volume.status}; detach it first", field="volume")
    session.delete(volume)
    session.flush()
    backend.delete(volume.id)
