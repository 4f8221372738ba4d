"""The one exception tree of dpustack, and its JSON form on the wire.

::

    DpustackError                 base; `code` and HTTP `status` name the kind
    ├── InvalidInput      400     bad input; `field` names the culprit
    ├── Unauthorized      401     missing or unknown token
    ├── Forbidden         403     token valid, role insufficient
    ├── NotFound          404     no such resource (or not yours)
    ├── Conflict          409     resource busy, in use, or name taken
    ├── DriverError       502     a hardware driver call failed (agent side)
    ├── NodeUnreachable   502     the controller could not reach an agent
    └── ApiError                  client side: an error answer from an API

Both HTTP apps answer errors as ``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class DpustackError(Exception):
    """Base of every error dpustack raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error, **self.extra}


class InvalidInput(DpustackError):
    code, status = "invalid_input", 400


class Unauthorized(DpustackError):
    code, status = "unauthorized", 401


class Forbidden(DpustackError):
    code, status = "forbidden", 403


class NotFound(DpustackError):
    code, status = "not_found", 404


class Conflict(DpustackError):
    code, status = "conflict", 409


class DriverError(DpustackError):
    code, status = "driver_error", 502


class NodeUnreachable(DpustackError):
    code, status = "node_unreachable", 502


class ApiError(DpustackError):
    """An error answer from a dpustack API, as seen by a client."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 body: dict[str, Any] | None = None):
        super().__init__(message, field=field)
        self.status = status
        self.code = code
        self.body = body or {}


_STATUS_CODES = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "invalid_input", 409: "conflict", 413: "invalid_input", 415: "invalid_input"}


def _field_of(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into a dotted field name without the 'body' prefix."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Make an app answer every error in dpustack's JSON error form."""

    @app.exception_handler(DpustackError)
    async def _dpustack_error(_: Request, exc: DpustackError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": ")
            return JSONResponse(InvalidInput(message, field="body").to_dict(), status_code=400)
        field = _field_of(tuple(first.get("loc", ())))
        message = f"{field}: {first.get('msg', 'invalid value')}"
        return JSONResponse(InvalidInput(message, field=field).to_dict(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_input")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
