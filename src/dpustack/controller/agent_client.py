"""The controller's client for a node's agent API: requests and answers are the models of
`dpustack.contract`."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import websockets.asyncio.client
import websockets.exceptions
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection

from dpustack.contract.instances import (BuildRequest, Console, InstanceOut, InstanceResult, NicRequest,
                                         PasswordRequest, RebootRequest, ResizeRequest, StepLog, StepsResult,
                                         VolumeRequest)
from dpustack.contract.live_migration import (IncomingOut, IncomingRequest, LiveMigrateOut, LiveMigrateRequest,
                                              ReceiveRequest)
from dpustack.contract.node import CredentialsRotation, NodeStatus
from dpustack.contract.switch import SwitchPortQos, SwitchPortQosOut
from dpustack.errors import DpustackError, DriverError, NodeUnreachable, NotFound
from dpustack.json_client import JsonClient, error_envelope

_STEP_LOGS = TypeAdapter(list[StepLog])


class AgentCallFailed(DpustackError):
    """An agent answered an action with an error; `substeps` is its step log."""

    code, status = "driver_error", 502

    def __init__(self, message: str, substeps: list[StepLog]):
        super().__init__(message)
        self.substeps = substeps


class AgentClient(JsonClient):
    """Calls one agent; every call it makes is idempotent on the agent side.

    Over https the agent's certificate must verify against `verify` and name the node's hostname (it is
    checked against the hostname, not the URL's host), so an agent cannot answer for another node. Plain
    http is refused unless `insecure`.
    """

    def __init__(self, hostname: str, url: str, credential: str, *, timeout: float,
                 verify: ssl.SSLContext | bool = True, insecure: bool = False,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(url, credential, timeout=timeout, server=f"node {hostname}", verify=verify,
                         transport=transport)
        self.hostname = hostname
        self._timeout = timeout
        self._plain_refused = url.startswith("http://") and not insecure

    def _refuse_plain(self) -> None:
        if self._plain_refused:
            raise NodeUnreachable(f"node {self.hostname}: refusing plain http to its agent (the controller is not "
                                  "insecure); the agent must serve https")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """Send `body` (a contract model, or None) to the agent; return its decoded JSON answer."""
        self._refuse_plain()
        json = body.model_dump(mode="json") if body is not None else None
        return self._send(method, path, json=json, extensions={"sni_hostname": self.hostname})

    def _unreachable(self, exc: httpx.TransportError) -> str:
        return f"node {self.hostname}: agent unreachable: {exc}"

    def _error(self, response: httpx.Response) -> DpustackError:
        envelope = error_envelope(response)
        if envelope is not None and "message" in envelope[1]:
            body, message = envelope[0], envelope[1]["message"]
        else:
            body, message = {}, response.text[:300] or response.reason_phrase
        text = f"node {self.hostname}: {message}"
        if response.status_code == 404:
            return NotFound(text)
        if "steps" in body:
            try:
                return AgentCallFailed(text, _STEP_LOGS.validate_python(body["steps"]))
            except ValidationError:
                return DriverError(f"{text} (with a step log that is not one)")
        return DriverError(text)

    # -- node -------------------------------------------------------------
    def status(self) -> NodeStatus:
        return self._parse(NodeStatus, self._call("GET", "/v1/status"))

    def rotate_credentials(self, report_token: str, controller_credential_sha256: str) -> None:
        self._call("PUT", "/v1/credentials", CredentialsRotation.model_validate(
            {"report_token": report_token, "controller_credential_sha256": controller_credential_sha256}))

    # -- compute ----------------------------------------------------------
    def build(self, request: BuildRequest) -> InstanceResult:
        return self._parse(InstanceResult, self._call("POST", "/v1/instances", request))

    def delete_instance(self, uuid: str) -> StepsResult:
        return self._parse(StepsResult, self._call("DELETE", f"/v1/instances/{uuid}"))

    def power(self, uuid: str, action: str, reboot_type: str | None = None) -> InstanceResult:
        body = RebootRequest.model_validate({"type": reboot_type}) if reboot_type else None
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/{action}", body))

    def resize(self, uuid: str, request: ResizeRequest) -> InstanceResult:
        """Have the agent define the VM again with the request's flavor and placement."""
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/resize", request))

    def set_password(self, uuid: str, request: PasswordRequest) -> InstanceResult:
        """Have the agent set a user's password in the running instance; the body carries the secret itself
        (a model dump would mask it), over the agent's TLS API only."""
        self._refuse_plain()
        body = {**request.model_dump(mode="json"), "password": request.password.get_secret_value()}
        return self._parse(InstanceResult, self._send("POST", f"/v1/instances/{uuid}/password", json=body,
                                                      extensions={"sni_hostname": self.hostname}))

    def console(self, uuid: str) -> Console:
        return self._parse(Console, self._call("GET", f"/v1/instances/{uuid}/console"))

    def console_log(self, uuid: str, limit: int) -> bytes:
        """The newest ``limit`` bytes of the instance's serial console."""
        self._refuse_plain()
        return self._answer("GET", f"/v1/instances/{uuid}/console/log", params={"limit": limit},
                            extensions={"sni_hostname": self.hostname}).content

    async def open_console_stream(self, uuid: str) -> ClientConnection:
        """The instance's serial console as an open WebSocket to the agent (binary messages both ways), its
        certificate checked as for every call; an error answer to the handshake raises as one to a call."""
        self._refuse_plain()
        url, tls, headers = self._websocket(f"/v1/instances/{uuid}/console/stream")
        try:
            return await websockets.asyncio.client.connect(
                url, ssl=tls, server_hostname=self.hostname if tls else None, open_timeout=self._timeout,
                additional_headers=headers, max_size=None)
        except websockets.exceptions.InvalidStatus as exc:
            raise self._handshake_refused(exc) from exc
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise NodeUnreachable(f"node {self.hostname}: agent console unreachable: {exc}") from exc

    def add_nic(self, uuid: str, nic: NicRequest) -> InstanceResult:
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/nics", nic))

    def remove_nic(self, uuid: str, port_id: str) -> InstanceResult:
        return self._parse(InstanceResult, self._call("DELETE", f"/v1/instances/{uuid}/nics/{port_id}"))

    # -- live migration ---------------------------------------------------
    def instance(self, uuid: str) -> InstanceOut:
        return self._parse(InstanceOut, self._call("GET", f"/v1/instances/{uuid}"))

    def incoming(self, uuid: str, request: IncomingRequest) -> IncomingOut:
        return self._parse(IncomingOut, self._call("POST", f"/v1/instances/{uuid}/incoming", request))

    def receive(self, uuid: str, request: ReceiveRequest) -> InstanceResult:
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/receive", request))

    def migrate_prepare(self, uuid: str) -> InstanceResult:
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/migrate-prepare"))

    def migrate_restore(self, uuid: str) -> InstanceResult:
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/migrate-restore"))

    def migrate_live(self, uuid: str, request: LiveMigrateRequest) -> LiveMigrateOut:
        """The live migration itself: the answer waits for it, so the call may take the request's timeout
        (and a little more) rather than the client's."""
        self._refuse_plain()
        return self._parse(LiveMigrateOut, self._send(
            "POST", f"/v1/instances/{uuid}/migrate-live", json=request.model_dump(mode="json"),
            timeout=request.timeout + self._timeout, extensions={"sni_hostname": self.hostname}))

    def migrate_abort(self, uuid: str) -> None:
        self._call("POST", f"/v1/instances/{uuid}/migrate-abort")

    # -- switch -----------------------------------------------------------
    def set_port_qos(self, port_id: str, pps: int | None) -> SwitchPortQosOut:
        """The packet-rate limit of a port plugged on this node (None: none)."""
        return self._parse(SwitchPortQosOut, self._call("PUT", f"/v1/switch/ports/{port_id}/qos",
                                                        SwitchPortQos(pps=pps)))

    def add_volume(self, uuid: str, volume: VolumeRequest) -> InstanceResult:
        return self._parse(InstanceResult, self._call("POST", f"/v1/instances/{uuid}/volumes", volume))

    def remove_volume(self, uuid: str, volume_id: str) -> InstanceResult:
        return self._parse(InstanceResult, self._call("DELETE", f"/v1/instances/{uuid}/volumes/{volume_id}"))
