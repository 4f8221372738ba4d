"""Images: create the record, then upload the bytes with PUT /file (checked against `disk_format`).

DELETE answers 204 when the image is gone, or 202 with the operation that first flattens the volumes
made from it."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dpustack.api.deps import CallerDep, ContextDep, OrchestratorDep
from dpustack.api.routers.operations import accept_as
from dpustack.api.schemas import ImageCreate, ImagePublic, OperationPublic
from dpustack.controller.context import ControllerContext
from dpustack.controller.services import images
from dpustack.controller.services.common import Caller
from dpustack.controller.storage import files
from dpustack.db.models import Image
from dpustack.errors import Conflict, NotFound

router = APIRouter(prefix="/images", tags=["images"])


@router.post("", response_model=ImagePublic, status_code=201)
def create_image(body: ImageCreate, context: ContextDep, caller: CallerDep) -> ImagePublic:
    with context.transaction() as session:
        return ImagePublic.model_validate(images.create_image(session, caller, name=body.name,
                                                              visibility=body.visibility,
                                                              disk_format=body.disk_format))


@router.get("", response_model=list[ImagePublic])
def list_images(context: ContextDep, caller: CallerDep) -> list[ImagePublic]:
    with context.transaction() as session:
        return [ImagePublic.model_validate(i) for i in images.list_images(session, caller)]


@router.get("/{ref}", response_model=ImagePublic)
def show_image(ref: str, context: ContextDep, caller: CallerDep) -> ImagePublic:
    with context.transaction() as session:
        return ImagePublic.model_validate(images.get_image(session, caller, ref))


@router.delete("/{ref}", status_code=204, response_model=None, responses={
    204: {"description": "the image is deleted: no volume shared it"},
    202: {"model": OperationPublic, "description": "volumes share the image: the operation that flattens "
                                                   "them, then deletes it (the image is `deleting` meanwhile)"}})
def delete_image(ref: str, context: ContextDep, caller: CallerDep, orchestrator: OrchestratorDep) -> Response:
    """Delete the image, flattening first (in an operation) the volumes made from it."""
    operation = accept_as(context, orchestrator,
                          lambda s: images.delete_image(s, caller, context.settings.images_dir, ref),
                          lambda op: None if op is None else OperationPublic.model_validate(op))
    if operation is None:
        return Response(status_code=204)
    return JSONResponse(operation.model_dump(mode="json"), status_code=202)


def _start_upload(context: ControllerContext, caller: Caller, ref: str) -> tuple[str, str, str]:
    """Mark the image `saving`; its id, name and claimed format."""
    with context.transaction() as session:
        image = images.get_image(session, caller, ref)
        images.check_owner(caller, image)
        if image.status != "queued":
            raise Conflict(f"image '{image.name}' already has data (status {image.status})", field="image")
        image.status = "saving"
        return image.id, image.name, image.disk_format


def _give_back(context: ControllerContext, image_id: str) -> None:
    """The upload broke off or was refused: the image may be uploaded again."""
    with context.transaction() as session:
        image = session.get(Image, image_id)
        if image is not None:
            image.status = "queued"


def _store(context: ControllerContext, image_id: str, name: str, disk_format: str, size: int, checksum: str) -> ImagePublic:
    images_dir = context.settings.images_dir
    try:
        found = images.store_upload(images_dir, image_id, name=name, disk_format=disk_format, size=size)
    except BaseException:
        _give_back(context, image_id)
        raise
    with context.transaction() as session:
        image = session.get(Image, image_id)
        if image is None:  # deleted meanwhile (only possible from another replica's stale view)
            files.remove(images.image_path(images_dir, image_id))
            raise NotFound(f"image {image_id} was deleted during the upload", field="image")
        image.status, image.size, image.checksum = "active", size, checksum
        image.virtual_size = found.virtual_size
        return ImagePublic.model_validate(image)


@router.put("/{ref}/file", response_model=ImagePublic)
async def upload_image_data(ref: str, request: Request, context: ContextDep, caller: CallerDep) -> ImagePublic:
    """Stream the request body to a temporary file, hashing as it goes; then check and keep it."""
    image_id, name, disk_format = await run_in_threadpool(_start_upload, context, caller, ref)
    partial = images.upload_path(context.settings.images_dir, image_id)
    digest, size = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        await run_in_threadpool(_give_back, context, image_id)
        raise
    return await run_in_threadpool(_store, context, image_id, name, disk_format, size, digest.hexdigest())
