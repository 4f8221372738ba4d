"""No input to either HTTP app holds a NUL character: one dependency every route runs."""

from __future__ import annotations

import json
from typing import Any

from fastapi import WebSocketException, status
from starlette.requests import HTTPConnection

from dpustack.errors import InvalidInput


def _nul_in(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first string (value or key) in a JSON document that holds a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = (*path, str(key))
        if "\x00" in str(key):
            return where
        found = _nul_in(item, where)
        if found is not None:
            return found
    return None


def _refuse(field: str) -> InvalidInput:
    return InvalidInput(f"{field}: NUL characters are not allowed", field=field)


async def refuse_nul_characters(request: HTTPConnection) -> None:
    """Refuse (400 naming it) a path or query parameter or a JSON body string that holds a NUL character.

    No dpustack input has a use for one, and PostgreSQL cannot store one: it
    would otherwise fail deep in a query. Each app runs this before every route.
    """
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if isinstance(value, str) and "\x00" in value:
            if request.scope["type"] == "websocket":  # a handshake is refused by closing
                raise WebSocketException(status.WS_1008_POLICY_VIOLATION, _refuse(name).message)
            raise _refuse(name)
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return  # no JSON body (an image upload streams raw bytes: never read it here)
    body = await request.body()
    if b"\\u0000" not in body:  # in JSON a NUL can only be written as this escape
        return
    try:
        document = json.loads(body)
    except ValueError:
        return  # not JSON: the route answers that, naming the body
    found = _nul_in(document)
    if found is not None:
        raise _refuse(".".join(found) or "body")
