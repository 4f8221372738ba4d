"""How both HTTP apps answer errors, and how their OpenAPI documents list them.

Every error is answered in the JSON form of :mod:`dpustack.errors` (`ErrorBody`): a `DpustackError`
with its own status, a validation failure as a 400 naming the field, a method the path does not take
as a 405 whose `Allow` lists every method of the path. Each operation of the OpenAPI document lists
the error answers it may give (`install_error_handlers`; how they are found: `error_statuses`).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, TypeVar

from fastapi import FastAPI, Request, routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema, models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from dpustack.errors import DpustackError, InvalidInput, MethodNotAllowed

_STATUS_CODES = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "invalid_input", 415: "invalid_input"}


def _field_of(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into a dotted field name without the 'body' prefix."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Make an app answer every error in dpustack's JSON error form, a method a path does not take with
    a 405 listing those it takes, and its OpenAPI document list each operation's error answers."""

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
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return _method_not_allowed(request, exc)
        code = _STATUS_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_input")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    _document_errors_in_openapi(app)


# -- 405: every method of the path ------------------------------------------------------
def _routes(app: FastAPI) -> list[Any]:
    """Every route of the app with its full path, including those of included routers."""
    contexts = getattr(routing, "iter_route_contexts", None)  # FastAPI >= 0.16x keeps included routers whole
    return list(contexts(app.routes)) if contexts else list(app.routes)


def _method_not_allowed(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """405 with `Allow` listing what every route of the path takes (the router names only the first)."""
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    allowed: set[str] = set()
    for route in _routes(request.app):
        regex, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and methods and regex.match(path):
            allowed |= set(methods)
    if not allowed:  # not one of our routes: trust the router
        allowed = {m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()}
    methods = sorted(allowed)
    error = MethodNotAllowed(f"{request.method} is not allowed on {path}; it takes {', '.join(methods)}")
    return JSONResponse(error.to_dict(), status_code=405, headers={"Allow": ", ".join(methods)})


# -- the error answers in the OpenAPI document ---------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="invalid_input, unauthorized, forbidden, not_found, method_not_allowed, "
                                  "conflict, driver_error, node_unreachable or internal_error")
    message: str = Field(description="what went wrong, for a person to read")
    # Absent, never null, when no input is to blame: documented as an optional string without a default.
    field: str | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=lambda schema: schema.pop("default", None),
        description="the input to blame, when one is: a dotted path for nested fields (networks.0.network)")


class ErrorBody(BaseModel):
    """Every error answer; an agent's failed change adds the `steps` it undid."""

    model_config = ConfigDict(extra="allow")
    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "invalid_input: a parameter or the body is malformed or out of range; `field` names it",
    401: "unauthorized: no bearer token, or not a valid one",
    403: "forbidden: the token's role may not do this",
    404: "not_found: a resource it names does not exist (or is another project's); `field` names it",
    409: "conflict: the resource is busy or in use, a name is taken or names several resources, "
         "or a change made at the same time won",
    502: "driver_error or node_unreachable: an agent, a hardware driver or the network backend failed "
         "or could not be reached",
}
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_ANSWERS = "__dpustack_error_statuses__"
_WRITES = {"post", "put", "patch", "delete"}
F = TypeVar("F", bound=Callable[..., Any])


def may_answer(*statuses: int) -> Callable[[F], F]:
    """Mark a dependency that may refuse a request with these statuses: every operation using it,
    directly or through another dependency, documents them."""
    def mark(function: F) -> F:
        setattr(function, _ANSWERS, (*getattr(function, _ANSWERS, ()), *statuses))
        return function
    return mark


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a router or a route whose errors its shape does not tell (see `error_statuses`),
    e.g. ``APIRouter(responses=error_responses(502))`` for routes that call a driver."""
    return {status: {"description": ERROR_DESCRIPTIONS.get(status, _STATUS_CODES.get(status, "error"))}
            for status in statuses}


def _dependency_statuses(dependant: Any) -> set[int]:
    found: set[int] = set()
    for dependency in getattr(dependant, "dependencies", ()):
        found |= set(getattr(dependency.call, _ANSWERS, ()))
        found |= _dependency_statuses(dependency)
    return found


def error_statuses(method: str, operation: dict[str, Any], dependant: Any) -> set[int]:
    """The error statuses an operation may answer, from its shape and its dependencies:

    * 400 if it takes any parameter or a body (validation, JSON, NUL characters);
    * 404 and 409 if its path names a resource (none by that name or id; a name several share);
    * 409 if it changes anything (name taken, in use, busy, a concurrent change);
    * what its dependencies declare with `may_answer` (authentication 401, roles 403, ...).

    Statuses the route or its router declares with `error_responses` come on top.
    """
    parameters = operation.get("parameters", [])
    found = _dependency_statuses(dependant)
    if parameters or "requestBody" in operation:
        found.add(400)
    if any(parameter.get("in") == "path" for parameter in parameters):
        found |= {404, 409}
    if method in _WRITES:
        found.add(409)
    return found


def _document_operation(operation: dict[str, Any], statuses: Iterable[int]) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's own validation answer: dpustack answers 400 instead
    for status in statuses:
        responses.setdefault(str(status), error_responses(status)[status])
    for status, response in responses.items():
        declared = (response.get("content") or {}).get("application/json", {}).get("schema")
        if status.isdigit() and int(status) >= 400 and not declared:
            response["content"] = _ERROR_REF
    operation["responses"] = dict(sorted(responses.items()))


def document_errors(app: FastAPI, document: dict[str, Any]) -> None:
    """Give every operation of the app's OpenAPI document its error answers, with the ErrorBody schema."""
    _, definitions = models_json_schema([(ErrorBody, "serialization")],
                                        ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))
    for route in _routes(app):
        path_item = document.get("paths", {}).get(getattr(route, "path_format", None)) or {}
        for method in sorted(getattr(route, "methods", None) or ()):
            operation = path_item.get(method.lower())
            if operation is not None:
                statuses = error_statuses(method.lower(), operation, getattr(route, "dependant", None))
                _document_operation(operation, sorted(statuses))
    # FastAPI's validation error schemas, unused now that no operation answers 422.
    unused = ("HTTPValidationError", "ValidationError")
    rest = json.dumps([document.get("paths", {}), {k: v for k, v in schemas.items() if k not in unused}])
    for name in unused:
        if f"#/components/schemas/{name}" not in rest:
            schemas.pop(name, None)


def _document_errors_in_openapi(app: FastAPI) -> None:
    """Make the app's OpenAPI document list each operation's error answers (built once, on first use)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(app, generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
