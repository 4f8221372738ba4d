"""Deleting an image that volumes share: flatten each of them (live when it is attached), then delete
the image's record and file.

Flattening is idempotent, so an operation resumed after a crash flattens again whatever it may not
have finished. A failure leaves the image `active` (the volumes flattened so far no longer share it)
and the operation failed with the reason.
"""

from __future__ import annotations

from typing import Any

from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.services import images
from dpustack.db.models import Image, Volume
from dpustack.errors import Conflict, NotFound


def _flatten_volumes(ctx: StepContext) -> None:
    """Copy the image's data into every volume that still rests on it."""
    flattened: list[str] = []
    ctx.detail.update(image=ctx.params["image_id"], volumes=flattened)
    for volume_id in ctx.params["volume_ids"]:
        with ctx.transaction() as session:
            volume = session.get(Volume, volume_id)
            if volume is None or volume.image_id != ctx.params["image_id"]:
                continue  # flattened before a crash
        try:
            ctx.context.volume_backend.flatten(volume_id)
        except NotFound:
            pass  # a volume whose create failed has no data, so nothing of it rests on the image
        with ctx.transaction() as session:
            session.get_one(Volume, volume_id).image_id = None
        flattened.append(volume_id)


def _remove_image(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        image = session.get(Image, ctx.params["image_id"])
        if image is None:
            return  # deleted before a crash
        if sharing := images.sharing_volumes(session, image.id):
            raise Conflict(f"volumes made from image '{image.name}' meanwhile still share it "
                           f"({', '.join(v.name for v in sharing)})", field="image")
        images.remove_image(session, ctx.context.settings.images_dir, image)
    ctx.detail["image"] = ctx.params["image_id"]


class DeleteImage:
    """Flatten the volumes sharing an image, then delete it; a failure keeps the image, `active` again."""

    action, rollback = images.DELETE_ACTION, False

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("flatten_volumes", _flatten_volumes), Step("delete_image", _remove_image)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        with ctx.transaction() as session:
            image = session.get(Image, ctx.params["image_id"])
            if image is not None:
                image.status = "active"


register(DeleteImage())
