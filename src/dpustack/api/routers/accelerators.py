"""Accelerators at the seed's paths, ``/accelerators`` (and ``/v1/accelerators``): list and show, register
(POST), change specs (PUT .../{acc_spec}), attach (PUT) and detach (DELETE). Service:
`controller.services.accelerators`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Header, Response

from dpustack.api.deps import CallerDep, ContextDep
from dpustack.api.schemas import AcceleratorAttach, AcceleratorCreate, AcceleratorList, AcceleratorPublic
from dpustack.controller.services import accelerators
from dpustack.db.models import Accelerator
from dpustack.errors import InvalidInput
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/accelerators", tags=["accelerators"])


def _answer(row: Accelerator, response: Response) -> AcceleratorPublic:
    response.headers["ETag"] = f'"{row.revision}"'
    return AcceleratorPublic.model_validate(row)


def _revision(if_match: str | None) -> int | None:
    """The revision an ``If-Match`` header names (``"3"``, ``W/"3"`` or ``3``); None without one."""
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidInput(f"If-Match: '{if_match[:40]}' is not an ETag this API gave (e.g. \"3\")",
                           field="If-Match")
    return int(text)


@router.get("", response_model=AcceleratorList)
def list_accelerators(context: ContextDep, caller: CallerDep) -> AcceleratorList:
    """The accelerators the caller may see: its project's, and the discovered ones no project holds."""
    with context.transaction() as session:
        rows = accelerators.list_accelerators(session, caller)
        return AcceleratorList(accelerator=[AcceleratorPublic.model_validate(row) for row in rows])


@router.get("/{uuid}", response_model=AcceleratorPublic)
def show_accelerator(uuid: str, context: ContextDep, caller: CallerDep, response: Response) -> AcceleratorPublic:
    with context.transaction() as session:
        return _answer(accelerators.get_accelerator(session, caller, uuid), response)


@router.post("", status_code=201, response_class=Response, responses={201: {"description": "registered; "
             "`Location` names it"}, **error_responses(409)})
def register_accelerator(body: AcceleratorCreate, context: ContextDep, caller: CallerDep) -> Response:
    """Register an accelerator of the caller's project: 201, empty body, `Location: /accelerators/{uuid}`."""
    with context.transaction() as session:
        row = accelerators.register(session, caller, body.name, str(body.uuid) if body.uuid else None)
        return Response(status_code=201, headers={"Location": f"/accelerators/{row.id}"})


@router.put("/{uuid}/{acc_spec}", response_model=AcceleratorPublic, responses=error_responses(404, 409))
def update_accelerator_spec(uuid: str, acc_spec: str, context: ContextDep, caller: CallerDep, response: Response,
                            body: dict[str, Any] = Body(), if_match: str | None = Header(default=None)
                            ) -> AcceleratorPublic:
    """Replace a registered accelerator's specs (`acc_spec` = `acc_specs`, body `{"acc_specs": {...}}`) or
    one of their fields (body `{"<acc_spec>": value}`). With `If-Match` (its ETag), or else as just read: 409
    if another writer changed them first."""
    with context.transaction() as session:
        row = accelerators.update_specs(session, caller, uuid, acc_spec, body, _revision(if_match))
        return _answer(row, response)


@router.put("/{uuid}", response_model=AcceleratorPublic, responses=error_responses(404, 409))
def attach_accelerator(uuid: str, body: AcceleratorAttach, context: ContextDep, caller: CallerDep,
                       response: Response) -> AcceleratorPublic:
    """Attach it to the caller's project on the host it is installed on; 409 if it is attached already."""
    with context.transaction() as session:
        row = accelerators.attach(session, caller, uuid, body.name, str(body.uuid) if body.uuid else None)
        return _answer(row, response)


@router.delete("/{uuid}", status_code=204, responses=error_responses(404))
def detach_accelerator(uuid: str, context: ContextDep, caller: CallerDep) -> Response:
    """Detach it (nothing to do if it is not attached)."""
    with context.transaction() as session:
        accelerators.detach(session, caller, uuid)
    return Response(status_code=204)
