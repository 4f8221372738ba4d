"""Instances' serial consoles: their logs, and the console itself over a WebSocket."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Response, WebSocket

from dpustack.agent.consoles import LOG_LIMIT
from dpustack.agent.routes.deps import IdPath, ServiceDep
from dpustack.contract.fields import IDENTIFIER_PATTERN
from dpustack.errors import InvalidInput, Unauthorized
from dpustack.web.console_relay import bearer_token, deny, serve_subscription
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/instances", tags=["instances"])
stream_router = APIRouter(prefix="/v1/instances", tags=["instances"])
Uuid = Annotated[str, IdPath]
Limit = Annotated[int, Query(ge=0, le=2 * LOG_LIMIT, description="how many of the newest bytes")]


@router.get("/{uuid}/console/log", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the newest bytes of the console"},
    **error_responses(404)})
def console_log(uuid: Uuid, service: ServiceDep, limit: Limit = 65536) -> Response:
    """What the instance printed on its serial console, the newest ``limit`` bytes."""
    return Response(service.consoles.log(uuid, limit), media_type="application/octet-stream")


@stream_router.websocket("/{uuid}/console/stream")
async def console_stream(websocket: WebSocket, uuid: str) -> None:
    """The instance's serial console, shared with whoever else is attached (binary messages both ways)."""
    service = websocket.app.state.service
    token = bearer_token(websocket)
    if not token or not service.credentials.accepts(token):
        await deny(websocket, Unauthorized("missing or invalid bearer token"))
    elif not re.fullmatch(IDENTIFIER_PATTERN, uuid):
        await deny(websocket, InvalidInput("uuid: not an identifier", field="uuid"))
    else:
        await serve_subscription(websocket, lambda output: service.consoles.subscribe(uuid, output),
                                 lambda data: service.consoles.write(uuid, data))
