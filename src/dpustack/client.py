"""Typed HTTP client for the dpustack controller API.

Used by the CLI, by agents (node reports) and by tests. Errors from the API
come back as :class:`dpustack.errors.ApiError` carrying the server's code,
message and field; a controller that cannot be reached raises
:class:`dpustack.errors.NodeUnreachable`.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from dpustack.contract.node import NodeReport
from dpustack.errors import ApiError, NodeUnreachable
from dpustack.json_client import JsonClient, error_envelope

TERMINAL_OPERATION_STATES = ("succeeded", "failed")


class Client(JsonClient):
    """A small synchronous client; one instance per (url, token)."""

    def __init__(self, url: str, token: str | httpx.Auth, *, timeout: float = 60.0,
                 verify: ssl.SSLContext | bool = True, transport: httpx.BaseTransport | None = None):
        """`token`: a bearer token, or an httpx.Auth that adds one per request; `verify`: how to check
        the controller's certificate (an SSL context with its CA, or the system's CAs)."""
        super().__init__(url, token, timeout=timeout, verify=verify, transport=transport)

    # -- mechanics -------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body (None for 204)."""
        return self._send(method, path, **kwargs)

    def _error(self, response: httpx.Response) -> ApiError:
        envelope = error_envelope(response)
        if envelope is None:
            return ApiError(response.status_code, "error", response.text[:500] or response.reason_phrase)
        body, error = envelope
        return ApiError(response.status_code, error.get("code", "error"), error.get("message", ""),
                        field=error.get("field"), body=body)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def put(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", path, json=body or {})

    def patch(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("PATCH", path, json=body or {})

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None})

    def register_accelerator(self, name: str, uuid: str | None = None) -> dict[str, Any]:
        """``POST /accelerators`` (201, no body): the accelerator its ``Location`` names."""
        response = self._answer("POST", "/accelerators", json={"name": name, **({"uuid": uuid} if uuid else {})})
        return self.get(response.headers["Location"])

    # -- operations ------------------------------------------------------
    def operation(self, operation_id: str) -> dict[str, Any]:
        return self.get(f"/v1/operations/{operation_id}")

    def watch_operation(self, operation_id: str, *, interval: float = 0.2,
                        timeout: float = 600.0) -> Iterator[dict[str, Any]]:
        """Yield the operation each time it is polled, until it ends or times out."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.operation(operation_id)
            yield op
            if op["status"] in TERMINAL_OPERATION_STATES:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"operation {operation_id} still {op['status']} after {timeout:.0f}s")
            time.sleep(interval)

    def wait_operation(self, operation_id: str, *, timeout: float = 600.0) -> dict[str, Any]:
        """Block until the operation ends; return its final form."""
        op: dict[str, Any] = {}
        for op in self.watch_operation(operation_id, timeout=timeout):
            pass
        return op

    # -- images -----------------------------------------------------------
    def upload_image(self, ref: str, path: Path, *, chunk_size: int = 1 << 20) -> dict[str, Any]:
        """Stream a local file as the content of image `ref`; return the active image."""

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while block := handle.read(chunk_size):
                    yield block

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
        return self.request("PUT", f"/v1/images/{ref}/file", content=chunks(), headers=headers)

    # -- consoles ---------------------------------------------------------
    def console_log(self, ref: str, limit: int) -> bytes:
        """The newest ``limit`` bytes server ``ref`` printed on its serial console."""
        return self._answer("GET", f"/v1/instances/{ref}/console/log", params={"limit": limit}).content

    def open_console(self, ref: str, *, timeout: float = 30.0) -> ClientConnection:
        """Server ``ref``'s serial console as an open WebSocket (binary messages both ways; close it); an error
        answer to the handshake raises ApiError as for any call."""
        url, tls, headers = self._websocket(f"/v1/instances/{ref}/console/stream")
        try:
            return connect(url, ssl=tls, additional_headers=headers, open_timeout=timeout, max_size=None)
        except InvalidStatus as exc:
            raise self._handshake_refused(exc) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise NodeUnreachable(f"cannot reach the console at {url}: {exc}") from exc

    # -- nodes (agents) --------------------------------------------------
    def report_node(self, report: NodeReport) -> dict[str, Any]:
        """An agent tells the controller about its node; the fields it left unset are not sent."""
        return self.post("/v1/nodes/report", report.body())
