"""Dependencies shared by the agent routes: bearer auth and the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dpustack.agent.service import AgentService
from dpustack.contract.fields import IDENTIFIER_PATTERN
from dpustack.errors import Unauthorized
from dpustack.web.http_errors import may_answer

_bearer = HTTPBearer(auto_error=False, description="the credential the controller presents to this node")


def get_service(request: Request) -> AgentService:
    return request.app.state.service


@may_answer(401)
def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Accept only ``Authorization: Bearer <the controller's credential for this node>``; only its
    SHA-256 is known here, compared in constant time."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    if not get_service(request).credentials.accepts(credentials.credentials):
        raise Unauthorized("invalid token")


ServiceDep = Annotated[AgentService, Depends(get_service)]
IdPath = Path(pattern=IDENTIFIER_PATTERN)
