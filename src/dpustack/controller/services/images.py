"""Images: metadata in the database, bytes in `$DPUSTACK_HOME/images/<id>`."""

from __future__ import annotations

from pathlib import Path
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import Caller, ensure_unique_name, find
from dpustack.db.models import Image
from dpustack.errors import Conflict, Forbidden

def _visible(caller: Caller):  # type: ignore[no-untyped-def]
    if caller.is_admin:
        return None
    return or_(Image.project_id == caller.project_id, Image.visibility == "public")


def create_image(session: Session, caller: Caller, *, name: str, visibility: str) -> Image:
    if visibility == "public":
        caller.require_admin()
    ensure_unique_name(session, Image, name, caller.project_id, kind="image")
    image = Image(name=name, project_id=caller.project_id, visibility=visibility)
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


def image_path(images_dir: Path, image_id: str) -> Path:
    return images_dir / image_id


def check_owner(caller: Caller, image: Image) -> None:
    if not caller.is_admin and image.project_id != caller.project_id:
        raise Forbidden(f"image '{image.name}' belongs to another project", field="image")


def delete_image(session: Session, caller: Caller, images_dir: Path, ref: str) -> None:
    image = get_image(session, caller, ref)
    check_owner(caller, image)
    if image.status == "saving":
        raise Conflict(f"image '{image.name}' is being uploaded; delete it when the upload ends", field="image")
    # Volumes hold their own copy of the bytes, so they do not pin the image.
    session.delete(image)
    image_path(images_dir, image.id).unlink(missing_ok=True)
