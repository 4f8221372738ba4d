"""The real ``dpustack-agent`` process survives kill -9: its functions come back as they were."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from dpustack.secrets import digest

API_TOKEN = "integration-api-token"
SECRETS = (API_TOKEN, "integration-agent-token", "integration-bmc-password")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _closed_port() -> int:
    return _free_port()  # nothing listens there once the probe socket is closed


def _agent_command(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("dpustack-agent")
    if script.exists():
        return [str(script), "--config", str(config)]
    return [sys.executable, "-m", "dpustack.agent.main", "--config", str(config)]


class AgentProcess:
    """Starts and kills one agent process; its stderr goes to a file."""

    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.url, self.log = config, f"http://127.0.0.1:{port}", log
        self.process: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None

    def start(self) -> httpx.Client:
        with self.log.open("ab") as stderr:
            self.process = subprocess.Popen(_agent_command(self.config), stdout=stderr, stderr=stderr)
        self.client = client = httpx.Client(base_url=self.url, timeout=10,
                                            headers={"Authorization": f"Bearer {API_TOKEN}"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"agent exited early:\n{self.log.read_text()}"
            try:
                if client.get("/healthz").status_code == 200:
                    return client
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"agent did not answer within 30s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[AgentProcess]:
    port = _free_port()
    config = tmp_path / "agent.toml"
    config.write_text(f"""
hostname = "dpu-it-1"
insecure = true
bind = "127.0.0.1:{port}"
state_dir = "{tmp_path / 'state'}"
report_interval = 0.5
reconcile_interval = 1

[controller]
url = "http://127.0.0.1:{_closed_port()}"
token = "integration-agent-token"

[api]
controller_credential_sha256 = "{digest(API_TOKEN)}"

[bmc]
address = "127.0.0.1"
username = "admin"
password = "integration-bmc-password"

[bmc.memory]
cpu = 16
mem = 65536
state_file = "bmc-power.json"
""")
    process = AgentProcess(config, port, tmp_path / "agent.log")
    try:
        yield process
    finally:
        process.kill()


def _observed(client: httpx.Client) -> dict[str, object]:
    return {
        "functions": sorted((f["id"], f["bdf"], f["representor"]) for f in client.get("/v1/functions").json()),
        "ports": sorted((p["port_name"], p["external_ids"]["iface-id"], p["pf_id"])
                        for p in client.get("/v1/switch/ports").json()),
        "power": client.get("/v1/bmc/power").json()["power_state"],
    }


def test_an_agent_killed_with_sigkill_rebuilds_its_functions_and_ports_on_restart(agent_process: AgentProcess):
    client = agent_process.start()
    build = client.post("/v1/instances", json={
        "uuid": "it-inst", "name": "it", "flavor": {"name": "bm", "vcpus": 8, "ram": 16384},
        "networks": [{"port_id": "it-port-a", "mac": "aa:bb:cc:00:10:01"},
                     {"port_id": "it-port-b", "mac": "aa:bb:cc:00:10:02"}],
        "volumes": [{"volume_id": "it-vol", "uri": "nvmf://10.0.0.5/it-vol", "bootable": True}]})
    assert build.status_code == 200, build.text
    before = _observed(client)
    assert len(before["functions"]) == 3 and len(before["ports"]) == 2 and before["power"] == "on"

    agent_process.kill()
    client = agent_process.start()

    assert _observed(client) == before
    assert client.get("/v1/instances/it-inst").json()["status"] == "ACTIVE"
    status = client.get("/v1/status").json()
    assert status["ready"] is True and status["used_cpu"] == 8 and status["total_cpu"] == 16
    log = agent_process.log.read_text()
    assert "cannot report to the controller" in log
    for secret in SECRETS:
        assert secret not in log
