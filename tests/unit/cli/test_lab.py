"""The lab commands and their parts: state file, process supervision, boot image, agent config."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dpustack.agent.config import parse_config
from dpustack.cli.main import app
from dpustack.lab import processes
from dpustack.secrets import decrypt
from dpustack.lab.agents import AgentSpec, render_config
from dpustack.lab.image import write_boot_image
from dpustack.lab.pki import LabCa
from dpustack.lab.state import LabProcess, LabState


def _lab(tmp_path: Path, *pids: int) -> LabState:
    home = tmp_path / "controller"
    home.mkdir()
    (home / "admin-token").write_text("adm1n\n")
    state = LabState(dir=str(tmp_path), controller_url="http://127.0.0.1:7000", controller_home=str(home),
                     nodes=["dpu-bm-1"])
    for index, pid in enumerate(pids):
        state.processes.append(LabProcess(name=f"p{index}", role="agent", pid=pid,
                                          started=processes.start_time(pid), url="http://x", log="/dev/null"))
    state.save()
    return state


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A detached process that would run for a minute."""
    pid = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"], log=Path("/dev/null"))
    yield pid
    processes.stop(pid, processes.start_time(pid), timeout=1)


def _lab_cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["lab", *args], env={"COLUMNS": "200"})


def test_state_file_is_private_and_round_trips(tmp_path: Path) -> None:
    state = _lab(tmp_path, 1)
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert LabState.load(tmp_path) == state


def test_lab_env_prints_exports_of_url_and_admin_token(tmp_path: Path) -> None:
    _lab(tmp_path)
    result = _lab_cli("env", "--dir", str(tmp_path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["export DPUSTACK_URL=http://127.0.0.1:7000",
                                          "export DPUSTACK_TOKEN=adm1n"]


def test_lab_commands_without_a_lab_say_how_to_start_one(tmp_path: Path) -> None:
    result = _lab_cli("status", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "no lab in" in result.stderr and "dpustack lab up" in result.stderr


def test_lab_status_tells_live_from_dead_processes(tmp_path: Path, sleeper: int) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lab(tmp_path, sleeper, dead.pid)
    result = _lab_cli("status", "--dir", str(tmp_path), "-f", "json")
    assert result.exit_code == 0
    alive = {p["pid"]: p["alive"] for p in json.loads(result.stdout)["processes"]}
    assert alive == {sleeper: True, dead.pid: False}


def test_second_up_while_the_lab_runs_says_so(tmp_path: Path, sleeper: int) -> None:
    _lab(tmp_path, sleeper)
    result = _lab_cli("up", "--bm", "1", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "already running" in result.stderr
    assert processes.is_alive(sleeper, processes.start_time(sleeper))


def test_lab_down_stops_every_process_and_removes_the_state(tmp_path: Path, sleeper: int) -> None:
    started = processes.start_time(sleeper)
    _lab(tmp_path, sleeper)
    result = _lab_cli("down", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert not processes.is_alive(sleeper, started)
    assert LabState.load(tmp_path) is None


def test_stop_kills_a_process_that_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    started = processes.start_time(child.pid)
    processes.stop(child.pid, started, timeout=0.5)
    assert not processes.is_alive(child.pid, started)


def test_a_reused_pid_is_not_taken_for_the_lab_process(sleeper: int) -> None:
    started = processes.start_time(sleeper)
    assert started is not None
    assert not processes.is_alive(sleeper, started + 1)


def test_boot_image_is_small_with_an_mbr_boot_signature(tmp_path: Path) -> None:
    image = write_boot_image(tmp_path / "boot.img").read_bytes()
    assert 100 * 1024 <= len(image) <= 1024 * 1024
    assert image[510:512] == b"\x55\xaa"
    assert image[446] == 0x80 and image[450] == 0x83  # one bootable Linux partition
    assert b"dpustack lab image" in image[:446]


def _spec(tmp_path: Path, hostname: str, port: int) -> AgentSpec:
    ca = LabCa(tmp_path / "pki")
    return AgentSpec(hostname=hostname, port=port, node_dir=tmp_path, controller_url="https://127.0.0.1:7000",
                     controller_token="agent-tok", controller_digest="ab" * 32, ca_file=ca.ca_file,
                     cert=ca.issue(hostname))


def test_agent_config_is_valid_toml_with_memory_drivers_and_tls_both_ways(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "dpu-bm-1", 7101)
    config = tomllib.loads(render_config(spec, serial="LABBF2000001"))
    assert config["hostname"] == "dpu-bm-1" and config["node_type"] == "bm"
    assert config["bind"] == "127.0.0.1:7101" and config["advertise_url"] == "https://127.0.0.1:7101"
    assert config["controller"] == {"url": "https://127.0.0.1:7000", "token": "agent-tok",
                                    "ca_file": str(tmp_path / "pki" / "ca.pem")}
    assert config["api"] == {"controller_credential_sha256": "ab" * 32}  # the controller's credential, hashed
    assert config["tls"] == {"cert_file": str(tmp_path / "pki" / "dpu-bm-1.pem"),
                             "key_file": str(tmp_path / "pki" / "dpu-bm-1.key")}
    assert "insecure" not in config
    # Every hardware concern is emulated in memory, except the PCI inventory: it reads the tree the lab generates.
    assert config["drivers"] == {"functions": "memory", "switch": "memory", "storage": "memory", "bmc": "memory",
                                 "inventory": "sysfs"}
    assert config["pci"]["root"] == str(tmp_path / "pci" / "sysfs")
    assert config["bmc"]["memory"]["cpu"] == 64 and config["bmc"]["memory"]["mem"] == 262144
    assert "password" not in config["bmc"]  # stored encrypted, with the node's own key
    assert len(decrypt(config["bmc"]["password_encrypted"], key_file=Path(config["bmc"]["secret_key_file"]))) >= 16


def test_agent_config_passes_the_agents_own_validation(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "dpu-bm-2", 7102)
    config = parse_config(tomllib.loads(render_config(spec, serial="LABBF2000002")))
    assert config.hostname == "dpu-bm-2" and config.advertise_url == spec.url
    assert config.bmc.memory.state_file == tmp_path / "state" / "bmc.json"
