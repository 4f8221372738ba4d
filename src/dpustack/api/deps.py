"""Dependencies every route uses: the context, the orchestrator and the authenticated caller.

Handlers open their own unit of work (`with context.transaction() as session`)
so that it is committed before they answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from dpustack.controller.orchestrator import Orchestrator
from dpustack.controller.context import ControllerContext
from dpustack.controller.services import identity
from dpustack.controller.services.common import ADMIN, AGENT, Caller
from dpustack.errors import Forbidden, Unauthorized
from dpustack.web.http_errors import may_answer


def get_context(request: Request) -> ControllerContext:
    return request.app.state.context


@may_answer(401)
def get_caller(request: HTTPConnection) -> Caller:
    """The caller whose token the request (or WebSocket handshake) bears."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with request.app.state.context.sessions() as session:
        return identity.authenticate(session, token.strip())


@may_answer(403)
def user_caller(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """Agents' tokens may only report; everything else needs a user token."""
    if caller.role == AGENT:
        raise Forbidden("agent tokens may only report node status")
    return caller


@may_answer(403)
def admin_caller(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if caller.role != ADMIN:
        raise Forbidden("this needs an admin token")
    return caller


@may_answer(403)
def agent_caller(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if caller.role != AGENT:
        raise Forbidden("only agents report node status")
    return caller


def get_orchestrator(request: Request) -> Orchestrator:
    return request.app.state.orchestrator


ContextDep = Annotated[ControllerContext, Depends(get_context)]
CallerDep = Annotated[Caller, Depends(user_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]
AgentDep = Annotated[Caller, Depends(agent_caller)]
OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
