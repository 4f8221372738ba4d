"""The controller's client for a node's agent API (seed 000 compute interfaces)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from dpustack.errors import DpustackError, DriverError, NodeUnreachable, NotFound


class AgentCallFailed(DpustackError):
    """An agent answered an action with an error; `substeps` is its step log."""

    code, status = "driver_error", 502

    def __init__(self, message: str, substeps: list[dict[str, Any]]):
        super().__init__(message)
        self.substeps = substeps


class AgentClient:
    """Calls one agent; every call it makes is idempotent on the agent side.

    Over https the agent's certificate must verify against `verify` and name the node's hostname (it is
    checked against the hostname, not the URL's host), so an agent cannot answer for another node. Plain
    http is refused unless `insecure`.
    """

    def __init__(self, hostname: str, url: str, credential: str, *, timeout: float,
                 verify: ssl.SSLContext | bool = True, insecure: bool = False,
                 transport: httpx.BaseTransport | None = None):
        self.hostname = hostname
        self._plain_refused = url.startswith("http://") and not insecure
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport, verify=verify,
                                  headers={"Authorization": f"Bearer {credential}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._plain_refused:
            raise NodeUnreachable(f"node {self.hostname}: refusing plain http to its agent (the controller is not "
                                  "insecure); the agent must serve https")
        try:
            response = self._http.request(method, path, json=body, extensions={"sni_hostname": self.hostname})
        except httpx.TransportError as exc:
            raise NodeUnreachable(f"node {self.hostname}: agent unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response.json() if response.content else {}

    def _error(self, response: httpx.Response) -> DpustackError:
        try:
            body = response.json()
            message = body["error"]["message"]
        except (ValueError, KeyError, TypeError):
            body, message = {}, response.text[:300] or response.reason_phrase
        text = f"node {self.hostname}: {message}"
        if response.status_code == 404:
            return NotFound(text)
        if "steps" in body:
            return AgentCallFailed(text, body["steps"])
        return DriverError(text)

    # -- node -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def rotate_credentials(self, report_token: str, controller_credential_sha256: str) -> None:
        self._call("PUT", "/v1/credentials", {"report_token": report_token,
                                              "controller_credential_sha256": controller_credential_sha256})

    # -- compute ----------------------------------------------------------
    def build(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/instances", spec)

    def delete_instance(self, uuid: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/instances/{uuid}")

    def power(self, uuid: str, action: str, reboot_type: str | None = None) -> dict[str, Any]:
        body = {"type": reboot_type} if reboot_type else None
        return self._call("POST", f"/v1/instances/{uuid}/{action}", body)

    def console(self, uuid: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/instances/{uuid}/console")

    def add_nic(self, uuid: str, port_id: str, mac: str, network_id: str,
                qos_pps: int | None = None) -> dict[str, Any]:
        return self._call("POST", f"/v1/instances/{uuid}/nics",
                          {"port_id": port_id, "mac": mac, "network_id": network_id, "qos_pps": qos_pps})

    def remove_nic(self, uuid: str, port_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/instances/{uuid}/nics/{port_id}")

    # -- switch -----------------------------------------------------------
    def set_port_qos(self, port_id: str, pps: int | None) -> dict[str, Any]:
        """The packet-rate limit of a port plugged on this node (None: none)."""
        return self._call("PUT", f"/v1/switch/ports/{port_id}/qos", {"pps": pps})

    def add_volume(self, uuid: str, volume_id: str, uri: str, bootable: bool) -> dict[str, Any]:
        return self._call("POST", f"/v1/instances/{uuid}/volumes",
                          {"volume_id": volume_id, "uri": uri, "bootable": bootable})

    def remove_volume(self, uuid: str, volume_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/instances/{uuid}/volumes/{volume_id}")
