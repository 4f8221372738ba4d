"""Dependencies shared by the agent routes: bearer auth and the runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dpustack.agent.runtime import AgentRuntime
from dpustack.contract.fields import IDENTIFIER_PATTERN
from dpustack.errors import Unauthorized
from dpustack.web.http_errors import may_answer

_bearer = HTTPBearer(auto_error=False, description="the credential the controller presents to this node")


def get_runtime(request: Request) -> AgentRuntime:
    return request.app.state.runtime


@may_answer(401)
def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Accept only ``Authorization: Bearer <the controller's credential for this node>``; only its
    SHA-256 is known here, compared in constant time."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    if not get_runtime(request).credentials.accepts(credentials.credentials):
        raise Unauthorized("invalid token")


RuntimeDep = Annotated[AgentRuntime, Depends(get_runtime)]
IdPath = Path(pattern=IDENTIFIER_PATTERN)
