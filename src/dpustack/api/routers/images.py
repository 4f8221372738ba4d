"""Images: create the record, then upload the bytes with PUT /file."""

from __future__ import annotations

import hashlib
import os

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from dpustack.api.deps import CallerDep, RuntimeDep
from dpustack.api.schemas import ImageCreate, ImagePublic
from dpustack.controller.runtime import Runtime
from dpustack.controller.services import images
from dpustack.controller.services.common import Caller
from dpustack.db.models import Image
from dpustack.errors import Conflict, NotFound

router = APIRouter(prefix="/images", tags=["images"])


@router.post("", response_model=ImagePublic, status_code=201)
def create_image(body: ImageCreate, runtime: RuntimeDep, caller: CallerDep) -> ImagePublic:
    with runtime.transaction() as session:
        return ImagePublic.model_validate(images.create_image(session, caller, name=body.name,
                                                              visibility=body.visibility))


@router.get("", response_model=list[ImagePublic])
def list_images(runtime: RuntimeDep, caller: CallerDep) -> list[ImagePublic]:
    with runtime.transaction() as session:
        return [ImagePublic.model_validate(i) for i in images.list_images(session, caller)]


@router.get("/{ref}", response_model=ImagePublic)
def show_image(ref: str, runtime: RuntimeDep, caller: CallerDep) -> ImagePublic:
    with runtime.transaction() as session:
        return ImagePublic.model_validate(images.get_image(session, caller, ref))


@router.delete("/{ref}", status_code=204)
def delete_image(ref: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    with runtime.transaction() as session:
        images.delete_image(session, caller, runtime.settings.images_dir, ref)
    return Response(status_code=204)


def _start_upload(runtime: Runtime, caller: Caller, ref: str) -> str:
    with runtime.transaction() as session:
        image = images.get_image(session, caller, ref)
        images.check_owner(caller, image)
        if image.status != "queued":
            raise Conflict(f"image '{image.name}' already has data (status {image.status})", field="image")
        image.status = "saving"
        return image.id


def _finish_upload(runtime: Runtime, image_id: str, size: int | None, checksum: str) -> ImagePublic:
    with runtime.transaction() as session:
        image = session.get(Image, image_id)
        if image is None:  # deleted meanwhile (only possible from another replica's stale view)
            images.image_path(runtime.settings.images_dir, image_id).unlink(missing_ok=True)
            raise NotFound(f"image {image_id} was deleted during the upload", field="image")
        if size is None:
            image.status = "queued"  # the upload broke off; it may be tried again
        else:
            image.status, image.size, image.checksum = "active", size, checksum
        return ImagePublic.model_validate(image)


@router.put("/{ref}/file", response_model=ImagePublic)
async def upload_image_data(ref: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> ImagePublic:
    """Stream the request body to disk, hashing as it goes."""
    image_id = await run_in_threadpool(_start_upload, runtime, caller, ref)
    target = images.image_path(runtime.settings.images_dir, image_id)
    partial = target.with_suffix(".part")
    digest, size = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        await run_in_threadpool(_finish_upload, runtime, image_id, None, "")
        raise
    return await run_in_threadpool(_finish_upload, runtime, image_id, size, digest.hexdigest())
