"""An in-process cloud for controller tests: the real controller app and real agent apps,
wired over HTTP semantics (httpx transports) instead of sockets.

The controller runs its operation workers; agents run without background
threads, and `report()` delivers their node reports when a test wants.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from dpustack.api.app import create_app as create_controller_app
from dpustack.controller.assembly import assemble_controller
from dpustack.controller.services import node_credentials
from dpustack.controller.services.nodes import get_node
from dpustack.controller.settings import Settings
from volume_backends import RecordingVolumeBackend


# The [pci] filter of a node whose BlueField-2 offers remote-managed VFs (physnet1) and its PFs.
BF2_FILTER = [{"match": {"vendor_id": "15b3", "product_id": "101e"},
               "extra": {"physical_network": "physnet1", "remote_managed": True}},
              {"match": {"vendor_id": "15b3", "product_id": "a2d6"}}]


class AgentRouter(httpx.BaseTransport):
    """Send each request to the in-process agent whose hostname is the URL's host."""

    def __init__(self) -> None:
        self.agents: dict[str, TestClient] = {}
        self.down: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down or host not in self.agents:
            raise httpx.ConnectError(f"connection refused: {host}", request=request)
        path = request.url.raw_path.decode()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = self.agents[host].request(request.method, path, content=request.read(), headers=headers)
        return httpx.Response(answer.status_code, content=answer.content,
                              headers={"content-type": answer.headers.get("content-type", "application/json")})


class ControllerTransport(httpx.BaseTransport):
    """A client's requests (the CLI's), answered by the in-process controller ``api``."""

    def __init__(self, api: TestClient):
        self.api = api

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = self.api.request(request.method, request.url.raw_path.decode(), content=request.read(),
                                  headers=headers)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


class Cloud:
    """One controller and N bare-metal agents, all in this process.

    Volumes are kept by the recording files backend (`volume_backends`), unless the settings name
    another (`volume_backend="qcow2", storage_qmp=..., storage_nbd=...`: the real storage service)."""

    def __init__(self, tmp_path: Path, database_url: str, *, nodes: int = 2, **settings: Any):
        self._stack = ExitStack()  # the controller's app
        # the agents' apps, closed after the controller's: its workers may still be calling them (a build
        # in flight when a test ends), and an agent closed under a call hangs the controller's shutdown
        self._agents = ExitStack()
        self.tmp_path = tmp_path
        self.router = AgentRouter()
        # in process, agents are reached over an httpx transport: no sockets, so no TLS (tests/integration
        # test_tls.py runs real servers with certificates)
        self.settings = Settings(home=tmp_path / "controller", database_url=database_url, workers=4,
                                 insecure=True, **settings)
        controller = assemble_controller(self.settings, agent_transport=self.router)
        if self.settings.volume_backend == "files":
            controller.context.volume_backend = RecordingVolumeBackend(self.settings.images_dir,
                                                                       self.settings.volumes_dir)
        # otherwise the backend the settings name, as the controller assembled it
        self.volume_backend: Any = controller.context.volume_backend
        self.api = self._stack.enter_context(TestClient(create_controller_app(controller)))
        self.context = controller.context
        self.orchestrator = controller.orchestrator
        self.storage_reconciler = controller.storage_reconciler
        self.admin_token = (self.settings.home / "admin-token").read_text().strip()
        self.api.headers["Authorization"] = f"Bearer {self.admin_token}"
        self.agent_tokens: dict[str, str] = {}  # hostname -> the agent token issued for that node
        self.agents: dict[str, Any] = {}
        for index in range(1, nodes + 1):
            self.add_node(f"dpu-bm-{index}")

    # -- plumbing -------------------------------------------------------------------
    def add_node(self, hostname: str, *, cpu: int = 64, mem: int = 262144, cards: list[Any] | None = None,
                 pci: dict[str, Any] | None = None, vm_cells: list[dict[str, Any]] | None = None,
                 vm_host: dict[str, Any] | None = None) -> None:
        """Enroll a node and join its agent; with `cards` its host gets that PCI tree and `pci` its [pci]
        settings; with `vm_cells` it is a vm node whose host (the memory hypervisor driver) has those
        NUMA cells and the other options `vm_host` gives (`others`, `dedicated_cpus`)."""
        from dpustack.agent.config import parse_config
        from dpustack.lab import pcitrees

        extra: dict[str, Any] = {}
        if cards is not None:
            tree = pcitrees.write_node(self.tmp_path / hostname / "pci", cards)
            extra["pci"] = {"root": str(tree.root), "devlink_json": str(tree.devlink_json), **(pci or {})}
        node_type = "bm" if vm_cells is None else "vm"
        if vm_cells is not None:
            extra["drivers"] = {"hypervisor": "memory"}
            extra["hypervisor"] = {"memory": {"cells": vm_cells, **(vm_host or {})}}
        enrolment = self.call("POST", "/v1/nodes", {"hostname": hostname, "node_type": node_type}, expect=201)
        self.agent_tokens[hostname] = enrolment["report_token"]
        config = parse_config({**extra,
            "hostname": hostname, "node_type": node_type, "dpu_model": "BF2", "insecure": True,
            "advertise_url": f"http://{hostname}", "state_dir": str(self.tmp_path / hostname),
            "controller": {"url": "http://controller.invalid", "token": enrolment["report_token"]},
            "api": {"controller_credential_sha256": enrolment["controller_credential_sha256"]},
            "bmc": {"address": "127.0.0.1", "username": "admin", "password": "secret",
                    "memory": {"cpu": cpu, "mem": mem, "serial_number": f"SN-{hostname}"}},
        })
        self._join(config)

    def restart_agent(self, hostname: str) -> None:
        """Start the node's agent again, on its state and its drivers (the DPU and the host go on), and
        deliver its report."""
        app = self.agents[hostname]
        self._join(app.state.service.config, app.state.service.drivers)

    def _join(self, config: Any, drivers: Any = None) -> None:
        from dpustack.agent.app import create_app as create_agent_app

        hostname = config.hostname
        app = create_agent_app(config, drivers=drivers, start_background=False)
        client = self._agents.enter_context(TestClient(app, base_url=f"http://{hostname}"))
        client.headers["Authorization"] = f"Bearer {self.controller_credential(hostname)}"
        self.router.agents[hostname] = client
        self.agents[hostname] = app
        self.report(hostname)

    def report_body(self, hostname: str) -> dict[str, Any]:
        """The report the node's agent would send now."""
        status = self.router.agents[hostname].get("/v1/status").json()
        return {k: status[k] for k in ("hostname", "ready", "node_type", "dpu_model", "total_cpu", "used_cpu",
                                       "total_mem", "used_mem", "instances", "agent_url", "pci_flavor_attrs",
                                       "pci_devices", "pci_pools", "traits", "dpus", "numa_cells")
                if k in status}

    def report(self, hostname: str | None = None, **changes: Any) -> dict[str, Any]:
        """Deliver node reports, as the agents' reporters would (with `changes` to the report, as an agent
        might send them); the node as the controller answered the last one."""
        node: dict[str, Any] = {}
        for name in [hostname] if hostname else list(self.router.agents):
            answer = self.api.post("/v1/nodes/report", json={**self.report_body(name), **changes},
                                   headers={"Authorization": f"Bearer {self.agent_token(name)}"})
            assert answer.status_code == 200, answer.text
            node = answer.json()
        return node

    def agent_token(self, hostname: str = "dpu-bm-1") -> str:
        """The report token the node's agent holds now (after a rotation: the new one)."""
        app = self.agents.get(hostname)
        return app.state.service.credentials.report_token() if app is not None else self.agent_tokens[hostname]

    def controller_credential(self, hostname: str) -> str:
        """The credential the controller presents to the node's agent now."""
        with self.context.transaction() as session:
            return node_credentials.current(get_node(session, hostname), self.settings.secret_key_file)

    def drivers(self, hostname: str) -> Any:
        return self.agents[hostname].state.service.drivers

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self._agents.close()

    # -- API helpers ----------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             expect: int | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        answer = self.api.request(method, path, json=body, headers=headers)
        if expect is not None:
            assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        elif answer.status_code >= 400:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def wait(self, operation: dict[str, Any], *, token: str | None = None, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            op = self.call("GET", f"/v1/operations/{operation['id']}", token=token)
            if op["status"] in ("succeeded", "failed"):
                return op
            assert time.monotonic() < deadline, f"operation still {op['status']}: {op}"
            time.sleep(0.02)

    def act(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> dict[str, Any]:
        """Start an action (202) and wait for its operation to end."""
        return self.wait(self.call(method, path, body, token=token, expect=202), token=token)

    def setup_basics(self, image_bytes: bytes = b"\x00" * 510 + b"\x55\xaa") -> None:
        """A flavor, an image with data and a network, as a user would make them."""
        self.call("POST", "/v1/flavors", {"name": "bm.small", "vcpus": 8, "ram": 16384, "disk": 40, "type": "bm"})
        self.call("POST", "/v1/images", {"name": "centos"})
        answer = self.api.put("/v1/images/centos/file", content=image_bytes,
                              headers={"Content-Type": "application/octet-stream"})
        assert answer.status_code == 200, answer.text
        self.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})

    def volume(self, name: str, *, token: str | None = None, **body: Any) -> dict[str, Any]:
        """Create a volume (202) and wait until its data is written; the volume as it is then."""
        volume = self.call("POST", "/v1/volumes", {"name": name, **body}, token=token, expect=202)
        operation = self.wait({"id": volume["operation_id"]}, token=token)
        assert operation["status"] == "succeeded", operation
        return self.call("GET", f"/v1/volumes/{volume['id']}", token=token)

    def build(self, name: str, *, token: str | None = None, **extra: Any) -> dict[str, Any]:
        body = {"name": name, "flavor": "bm.small", "image": "centos", "networks": [{"network": "net1"}], **extra}
        return self.act("POST", "/v1/instances", body, token=token)
