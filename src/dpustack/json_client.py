"""What dpustack's two HTTP clients share: one JSON API at one base URL, with bearer auth, TLS
verification and error translation at the boundary.

`dpustack.client.Client` (the controller API, for the CLI, agents and tests)
and `dpustack.controller.agent_client.AgentClient` (a node's agent API, for the
controller) are subclasses: each says how an error answer becomes one of the
exceptions of `dpustack.errors`, and how it names the server it cannot reach.
"""

from __future__ import annotations

import abc
import ssl
from typing import Any, Self, TypeVar

import httpx
from websockets.exceptions import InvalidStatus
from pydantic import BaseModel, ValidationError

from dpustack.errors import DpustackError, DriverError, NodeUnreachable

Answer = TypeVar("Answer", bound=BaseModel)


class JsonClient(abc.ABC):
    """A synchronous client for one server; `close()` it, or use it as a context manager."""

    def __init__(self, url: str, token: str | httpx.Auth, *, timeout: float, server: str = "",
                 verify: ssl.SSLContext | bool = True, transport: httpx.BaseTransport | None = None):
        """`token`: a bearer token, or an httpx.Auth that adds one per request; `server`: how messages name
        the server (default: its URL); `verify`: how to check the server's certificate (an SSL context
        with its CA, or the system's CAs)."""
        self.url = url.rstrip("/")
        self.server = server or self.url
        auth = token if isinstance(token, httpx.Auth) else None
        headers = {} if auth else {"Authorization": f"Bearer {token}"}
        self._headers = headers
        self._verify = verify
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport, auth=auth,
                                  verify=verify, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return its decoded JSON body (None when it has none).

        An unreachable server raises NodeUnreachable; an error answer what `_error` makes of it.
        """
        response = self._answer(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _answer(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; return its successful answer (errors raised as by `_send`)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise NodeUnreachable(self._unreachable(exc)) from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _websocket(self, path: str) -> tuple[str, ssl.SSLContext | None, dict[str, str]]:
        """Where to open a WebSocket at `path` of this server: its ws(s) URL, the TLS context that checks the
        server as every call does (None for plain ws), and the handshake's headers."""
        url = "ws" + self.url.removeprefix("http") + path
        tls: ssl.SSLContext | None = None
        if url.startswith("wss:"):
            tls = self._verify if isinstance(self._verify, ssl.SSLContext) else ssl.create_default_context()
        return url, tls, self._headers

    def _handshake_refused(self, exc: InvalidStatus) -> DpustackError:
        """A WebSocket handshake answered with an error, as the exception an error answer to a call is."""
        return self._error(httpx.Response(exc.response.status_code, content=exc.response.body or b""))

    def _unreachable(self, exc: httpx.TransportError) -> str:
        """Why a request did not reach the server, as NodeUnreachable says it."""
        return f"cannot reach {self.url}: {exc}"

    @abc.abstractmethod
    def _error(self, response: httpx.Response) -> DpustackError:
        """The exception an error answer (status >= 400) is raised as."""

    def _parse(self, model: type[Answer], body: Any) -> Answer:
        """An answer as the model it must be; one that is not is the server's fault (DriverError)."""
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise DriverError(f"{self.server}: the answer is not a {model.__name__}: {exc}") from exc


def error_envelope(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The JSON body of an error answer and its ``error`` object, or None if it has no such envelope."""
    try:
        body = response.json()
        error = body["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(body, dict) or not isinstance(error, dict):
        return None
    return body, error
