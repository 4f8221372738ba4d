"""Who am I, projects and tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dpustack.api.deps import AdminDep, ContextDep, get_caller
from dpustack.api.schemas import ProjectCreate, ProjectPublic, TokenCreate, TokenCreated, TokenPublic, WhoAmI
from dpustack.controller.services import identity
from dpustack.controller.services.common import Caller
from dpustack.web.http_errors import error_responses

router = APIRouter(tags=["identity"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: Annotated[Caller, Depends(get_caller)]) -> WhoAmI:
    return WhoAmI(project_id=caller.project_id, project_name=caller.project_name, role=caller.role)


@router.post("/projects", response_model=ProjectPublic, status_code=201)
def create_project(body: ProjectCreate, context: ContextDep, _: AdminDep) -> ProjectPublic:
    with context.transaction() as session:
        return ProjectPublic.model_validate(identity.create_project(session, body.name))


@router.get("/projects", response_model=list[ProjectPublic])
def list_projects(context: ContextDep, _: AdminDep) -> list[ProjectPublic]:
    with context.transaction() as session:
        return [ProjectPublic.model_validate(p) for p in identity.list_projects(session)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, responses=error_responses(404))
def create_token(body: TokenCreate, context: ContextDep, _: AdminDep) -> TokenCreated:
    with context.transaction() as session:
        row, plain = identity.create_token(session, body.project, body.role, body.name, body.node)
        return TokenCreated(**TokenPublic.model_validate(row).model_dump(), token=plain)


@router.get("/tokens", response_model=list[TokenPublic])
def list_tokens(context: ContextDep, _: AdminDep) -> list[TokenPublic]:
    with context.transaction() as session:
        return [TokenPublic.model_validate(t) for t in identity.list_tokens(session)]


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(token_id: str, context: ContextDep, caller: AdminDep) -> Response:
    with context.transaction() as session:
        identity.delete_token(session, token_id, caller)
    return Response(status_code=204)
