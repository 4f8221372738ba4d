"""The one exception tree of dpustack, and its JSON form on the wire.

::

    DpustackError                 base; `code` and HTTP `status` name the kind
    ├── InvalidInput      400     bad input; `field` names the culprit
    ├── Unauthorized      401     missing or unknown token
    ├── Forbidden         403     token valid, role insufficient
    ├── NotFound          404     no such resource (or not yours)
    ├── MethodNotAllowed  405     the path does not take that method (`Allow` lists those it takes)
    ├── Conflict          409     resource busy, in use, or name taken
    ├── DriverError       502     a hardware driver call failed (agent side)
    ├── NodeUnreachable   502     the controller could not reach an agent
    └── ApiError                  client side: an error answer from an API

An error's JSON form (`to_dict`) is ``{"error": {"code", "message", "field"?}}``. This module
imports no web framework, so drivers, PCI logic and the agent's reconciler raise these without
loading one; how both HTTP apps answer them and document them is `dpustack.web.http_errors`.
"""

from __future__ import annotations

from typing import Any


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


class MethodNotAllowed(DpustackError):
    code, status = "method_not_allowed", 405


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
