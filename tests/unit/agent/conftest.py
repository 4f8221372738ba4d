"""An agent under test: the real app over memory drivers, driven through fastapi's TestClient."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from dpustack.secrets import digest
from dpustack.agent.app import create_app
from dpustack.agent.config import AgentConfig, parse_config
from dpustack.agent.hardware import DriverSet
from dpustack.agent.service import AgentService
from dpustack.agent.store import FunctionRecord, InstanceRecord, PortBinding, VolumeBinding
from dpustack.drivers.bmc.memory import MemoryBmcDriver
from dpustack.drivers.functions.memory import MemoryFunctionDriver
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver
from dpustack.drivers.storage.memory import MemoryStorageDriver
from dpustack.drivers.switch.memory import MemorySwitchDriver

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns about its httpx-based TestClient
    from fastapi.testclient import TestClient

API_TOKEN = "controller-to-agent-secret"
MAC_A, MAC_B, MAC_C = "aa:bb:cc:00:00:0a", "aa:bb:cc:00:00:0b", "aa:bb:cc:00:00:0c"


def build_request(**overrides: Any) -> dict[str, Any]:
    """A bare-metal build with two NICs and a boot volume."""
    request = {
        "uuid": "inst-1", "name": "web-1", "image": "centos-9",
        "user_data": {"admin_pass": "do-not-store"},
        "flavor": {"name": "bm.4c8g", "vcpus": 4, "ram": 8192, "disk": 40},
        "networks": [{"port_id": "port-a", "mac": MAC_A, "network_id": "net-1"},
                     {"port_id": "port-b", "mac": MAC_B, "network_id": "net-1"}],
        "volumes": [{"volume_id": "vol-boot", "uri": "nvmf://10.0.0.5/vol-boot", "bootable": True}],
    }
    request.update(overrides)
    return request


def memory_drivers(bmc: MemoryBmcDriver | None = None) -> DriverSet:
    return DriverSet(MemoryFunctionDriver(), MemorySwitchDriver(), MemoryStorageDriver(),
                     bmc or MemoryBmcDriver(cpu=64, mem=262144))


def vm_drivers() -> DriverSet:
    """A vm node's memory drivers: a bm node's and a pretend hypervisor."""
    drivers = memory_drivers()
    return DriverSet(drivers.functions, drivers.switch, drivers.storage, drivers.bmc,
                     hypervisor=MemoryHypervisorDriver())


class Agent:
    """One running agent app with its drivers, plus what a user would look at."""

    def __init__(self, client: TestClient, drivers: DriverSet):
        self.client = client
        self.drivers = drivers
        self.service: AgentService = client.app.state.service

    def call(self, method: str, path: str, *, token: str | None = API_TOKEN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.call("POST", path, json=body or {})

    def delete(self, path: str) -> httpx.Response:
        return self.call("DELETE", path)

    def build(self, **overrides: Any) -> httpx.Response:
        return self.post("/v1/instances", build_request(**overrides))

    def driver(self, name: str) -> Any:
        return getattr(self.drivers, name)

    def forget_calls(self) -> None:
        for name in ("functions", "switch", "storage", "bmc"):
            self.driver(name).faults.clear()

    def hardware(self) -> dict[str, Any]:
        """What the drivers hold: functions, switch ports, attachments and host power."""
        return {
            "functions": sorted((f.id, f.bdf, f.representor, f.mac) for f in self.drivers.functions.list()),
            "ports": sorted((p.bridge, p.name, tuple(sorted(p.external_ids.items())))
                            for p in self.drivers.switch.list_ports()),
            "attachments": sorted((a.function_id, a.volume_id, a.uri) for a in self.drivers.storage.list()),
            "power": self.drivers.bmc.power_state(),
        }

    def records(self) -> dict[str, Any]:
        """What the agent's store holds."""
        store = self.service.store
        return {
            "functions": sorted((r.id, r.slot, r.bdf, r.desired) for r in store.find(FunctionRecord)),
            "ports": sorted((r.port_id, r.port_name, r.desired) for r in store.find(PortBinding)),
            "volumes": sorted((r.volume_id, r.function_id, r.desired) for r in store.find(VolumeBinding)),
            "instances": sorted((r.uuid, r.status, r.power) for r in store.find(InstanceRecord)),
        }

    def snapshot(self) -> dict[str, Any]:
        return {"hardware": self.hardware(), "records": self.records()}


StartAgent = Callable[..., Agent]


@pytest.fixture
def config_for(tmp_path: Path) -> Callable[..., AgentConfig]:
    def make(state_dir: Path | None = None, **overrides: Any) -> AgentConfig:
        data = {"hostname": "dpu-node-1", "state_dir": str(state_dir or tmp_path / "state"),
                "controller": {"url": "http://127.0.0.1:9", "token": "agent-role-token"},
                "api": {"controller_credential_sha256": digest(API_TOKEN)}, "insecure": True, **overrides}
        return parse_config(data)
    return make


@pytest.fixture
def start_agent(config_for: Callable[..., AgentConfig]) -> Iterator[StartAgent]:
    """Start an agent app (it reconciles once; loops only with ``background``); stopped at teardown."""
    with contextlib.ExitStack() as stack:
        def start(drivers: DriverSet | None = None, config: AgentConfig | None = None, *,
                  background: bool = False) -> Agent:
            drivers = drivers or memory_drivers()
            app = create_app(config or config_for(), drivers=drivers, start_background=background)
            client = stack.enter_context(TestClient(app, raise_server_exceptions=True))
            return Agent(client, drivers)
        yield start


@pytest.fixture
def vm_agent(start_agent: StartAgent, config_for: Callable[..., AgentConfig]) -> Agent:
    """An agent of a vm node, over the memory drivers and the memory hypervisor."""
    return start_agent(vm_drivers(), config_for(node_type="vm", drivers={"hypervisor": "memory"}))


@pytest.fixture
def agent(start_agent: StartAgent) -> Agent:
    return start_agent()


@pytest.fixture
def built(agent: Agent) -> Agent:
    """An agent hosting the two-NIC, one-volume instance ``inst-1``."""
    response = agent.build()
    assert response.status_code == 200, response.text
    agent.forget_calls()
    return agent
