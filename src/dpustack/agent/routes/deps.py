"""Dependencies shared by the agent routes: bearer auth and the runtime."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dpustack.agent.runtime import AgentRuntime
from dpustack.errors import Unauthorized, may_answer

_bearer = HTTPBearer(auto_error=False, description="the agent's [api] token")


def get_runtime(request: Request) -> AgentRuntime:
    return request.app.state.runtime


@may_answer(401)
def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Accept only ``Authorization: Bearer <[api] token>``, compared in constant time."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    expected = get_runtime(request).config.api.token.get_secret_value()
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("invalid token")


RuntimeDep = Annotated[AgentRuntime, Depends(get_runtime)]
IdPath = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
