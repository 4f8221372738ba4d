"""The lab commands and their parts: state file, process supervision, boot image, agent config."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dpustack.agent.config import parse_config
from dpustack.cli.main import app
from dpustack.lab import lifecycle, processes
from dpustack.secrets import decrypt
from dpustack.lab.agents import AgentSpec, NodeDataplane, VmHost, render_config
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
    assert config.driver_choices["bmc"].options["state_file"] == tmp_path / "state" / "bmc.json"



def test_a_vm_nodes_config_runs_its_vms_through_the_lab_hypervisor_with_tapped_functions(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "dpu-vm-1", 7103)
    dataplane = NodeDataplane(host_netns="host-vm-1", dpu_netns="dpu-vm-1", ovsdb="unix:/lab/dp/db.sock",
                              qsd=Path("/lab/dp/qsd.sock"), vhost_dir=Path("/lab/dp/vhost"))
    host = VmHost(uri="qemu+unix:///system?socket=/lab/libvirt-sock", command_dir=tmp_path / "cmd")
    text = render_config(spec, serial="LABBF2000003", dataplane=dataplane, hypervisor=host)
    raw = tomllib.loads(text)
    assert raw["node_type"] == "vm" and raw["drivers"]["hypervisor"] == "libvirt-lab"
    assert raw["hypervisor"]["libvirt-lab"] == {"uri": host.uri, "vhost_dir": "/lab/dp/vhost",
                                                "command_dir": str(tmp_path / "cmd")}
    # the functions stand in for VMs on taps; there is no host machine to plug them into
    assert raw["functions"]["lab"] == {"host_netns": "host-vm-1", "dpu_netns": "dpu-vm-1", "taps": True}
    assert "host" not in raw["bmc"]
    config = parse_config(raw)
    assert config.node_type == "vm" and config.drivers.hypervisor == "libvirt-lab"


@pytest.mark.parametrize(("bm", "vm", "dataplane", "message"), [
    (0, 0, "memory", "at least one node"),
    (1, 1, "memory", "VM nodes need --dataplane ovn"),
])
def test_lab_up_refuses_what_it_cannot_start(tmp_path: Path, bm: int, vm: int, dataplane: str, message: str) -> None:
    result = _lab_cli("up", "--bm", str(bm), "--vm", str(vm), "--dataplane", dataplane, "--dir", str(tmp_path))
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert LabState.load(tmp_path) is None

# ---------------------------------------------------------------- lab restart / lab kill

_SERVING = "import time; print('listening on 127.0.0.1:1 (udp)', flush=True); time.sleep(60)"


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    """A lab directory; whatever lab.json records at the end is stopped."""
    yield tmp_path
    state = LabState.load(tmp_path)
    for proc in state.processes if state else []:
        processes.stop(proc.pid, proc.started, timeout=1)


def _recorded_lab(lab_dir: Path, code: str = _SERVING) -> LabState:
    """A lab whose one process, an IPMI BMC emulator stand-in, was started from a recorded command."""
    state = _lab(lab_dir)
    proc = LabProcess(name="dpu-bm-1/bmc-ipmi", role="bmc", pid=0, started=None, url="ipmi://127.0.0.1:1",
                      log=str(lab_dir / "bmc.log"), argv=[sys.executable, "-c", code], env={"LAB_MARK": "1"},
                      cwd=str(lab_dir))
    lifecycle.launch(proc)
    state.processes.append(proc)
    state.save()
    return state


def _status(lab_dir: Path) -> dict[str, dict]:
    result = _lab_cli("status", "--dir", str(lab_dir), "-f", "json")
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.stdout)["processes"]}


def test_a_process_record_keeps_the_command_that_starts_it_again(lab_dir: Path) -> None:
    state = _recorded_lab(lab_dir)
    (proc,) = LabState.load(lab_dir).processes
    assert proc == state.processes[0] and proc.restartable
    assert proc.argv[0] == sys.executable and proc.env == {"LAB_MARK": "1"} and proc.cwd == str(lab_dir)
    assert b"LAB_MARK=1" in Path(f"/proc/{proc.pid}/environ").read_bytes()


def test_restart_starts_the_recorded_command_again_and_records_the_new_pid(lab_dir: Path) -> None:
    old = _recorded_lab(lab_dir).processes[0]
    result = _lab_cli("restart", "dpu-bm-1/bmc-ipmi", "--dir", str(lab_dir))
    assert result.exit_code == 0, result.output
    new = LabState.load(lab_dir).process("dpu-bm-1/bmc-ipmi")
    assert new.pid != old.pid and f"pid {old.pid} -> {new.pid}" in result.stdout
    assert not processes.is_alive(old.pid, old.started)
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"] | {"pid": new.pid, "alive": True} == \
        _status(lab_dir)["dpu-bm-1/bmc-ipmi"]
    down = _lab_cli("down", "--dir", str(lab_dir))
    assert down.exit_code == 0 and not processes.is_alive(new.pid, new.started)


def test_restart_of_a_process_that_dies_at_start_shows_its_log_and_status_shows_it_dead(lab_dir: Path) -> None:
    _recorded_lab(lab_dir)
    state = LabState.load(lab_dir)
    state.processes[0].argv = [sys.executable, "-c", "import sys; sys.exit('bad config: no [controller]')"]
    state.save()
    result = _lab_cli("restart", "dpu-bm-1/bmc-ipmi", "--dir", str(lab_dir))
    assert result.exit_code == 1
    assert "exited after its restart" in result.stderr and "bad config: no [controller]" in result.stderr
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"]["alive"] is False
    assert _lab_cli("down", "--dir", str(lab_dir)).exit_code == 0


def test_a_state_file_from_before_restart_still_loads_and_stops(lab_dir: Path, sleeper: int) -> None:
    started = processes.start_time(sleeper)
    old = {"dir": str(lab_dir), "controller_url": "http://127.0.0.1:7000", "nodes": ["dpu-bm-1"],
           "processes": [{"name": "dpu-bm-1", "role": "agent", "pid": sleeper, "started": started,
                          "url": "http://x", "log": "/dev/null", "config": None}]}
    (lab_dir / "lab.json").write_text(json.dumps(old))
    refused = _lab_cli("restart", "dpu-bm-1", "--dir", str(lab_dir))
    assert refused.exit_code == 1 and "command line was not recorded" in refused.stderr
    assert processes.is_alive(sleeper, started)
    assert _lab_cli("down", "--dir", str(lab_dir)).exit_code == 0
    assert not processes.is_alive(sleeper, started)


def test_restart_refuses_an_ovn_daemon_and_names_what_it_can_restart(lab_dir: Path, sleeper: int) -> None:
    state = _recorded_lab(lab_dir)
    state.processes.append(LabProcess(name="dpu-bm-1/ovs-vswitchd", role="dpu", pid=sleeper,
                                      started=processes.start_time(sleeper), url="", log="/dev/null"))
    state.save()
    result = _lab_cli("restart", "dpu-bm-1/ovs-vswitchd", "--dir", str(lab_dir))
    assert result.exit_code == 1
    assert "lab's data plane" in result.stderr and "can restart: dpu-bm-1/bmc-ipmi" in result.stderr
    assert "lab kill dpu-bm-1/ovs-vswitchd" in result.stderr
    assert processes.is_alive(sleeper, processes.start_time(sleeper))


def test_restart_and_kill_of_an_unknown_name_list_the_lab_s_processes(lab_dir: Path) -> None:
    _recorded_lab(lab_dir)
    for command in ("restart", "kill"):
        result = _lab_cli(command, "dpu-bm-9", "--dir", str(lab_dir))
        assert result.exit_code == 1
        assert "no process 'dpu-bm-9'" in result.stderr and "it has: dpu-bm-1/bmc-ipmi" in result.stderr


def test_kill_with_signal_kill_keeps_the_record_so_status_shows_it_dead(lab_dir: Path) -> None:
    proc = _recorded_lab(lab_dir).processes[0]
    result = _lab_cli("kill", "dpu-bm-1/bmc-ipmi", "--signal", "KILL", "--dir", str(lab_dir))
    assert result.exit_code == 0, result.output
    assert "Sent SIGKILL" in result.stdout and "lab restart dpu-bm-1/bmc-ipmi" in result.stdout
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"] | {"pid": proc.pid, "alive": False} == \
        _status(lab_dir)["dpu-bm-1/bmc-ipmi"]
    again = _lab_cli("kill", "dpu-bm-1/bmc-ipmi", "--dir", str(lab_dir))
    assert again.exit_code == 1 and "is not running" in again.stderr
    assert _lab_cli("restart", "dpu-bm-1/bmc-ipmi", "--dir", str(lab_dir)).exit_code == 0
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"]["alive"] is True
    terminated = _lab_cli("kill", "dpu-bm-1/bmc-ipmi", "--dir", str(lab_dir))  # TERM by default
    assert terminated.exit_code == 0 and "Sent SIGTERM to dpu-bm-1/bmc-ipmi: it has exited" in terminated.stdout
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"]["alive"] is False


def test_kill_stop_then_cont_pauses_and_resumes_the_process(lab_dir: Path) -> None:
    proc = _recorded_lab(lab_dir).processes[0]
    stopped = _lab_cli("kill", "dpu-bm-1/bmc-ipmi", "-s", "stop", "--dir", str(lab_dir))
    assert stopped.exit_code == 0 and "it is stopped" in stopped.stdout
    assert processes.run_state(proc.pid) == "T"
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"] | {"alive": True, "stopped": True} == \
        _status(lab_dir)["dpu-bm-1/bmc-ipmi"]
    assert "stopped" in _lab_cli("status", "--dir", str(lab_dir)).stdout
    resumed = _lab_cli("kill", "dpu-bm-1/bmc-ipmi", "-s", "SIGCONT", "--dir", str(lab_dir))
    assert resumed.exit_code == 0 and "it is running" in resumed.stdout
    assert processes.run_state(proc.pid) != "T"
    assert _status(lab_dir)["dpu-bm-1/bmc-ipmi"]["stopped"] is False


def test_kill_with_an_unknown_signal_is_a_usage_error_naming_the_option(lab_dir: Path) -> None:
    proc = _recorded_lab(lab_dir).processes[0]
    result = _lab_cli("kill", "dpu-bm-1/bmc-ipmi", "--signal", "NOPE", "--dir", str(lab_dir))
    assert result.exit_code == 2
    assert "--signal" in result.stderr and "no signal called 'NOPE'" in result.stderr
    assert processes.is_alive(proc.pid, proc.started)


def test_signal_names_are_read_with_or_without_sig_in_any_case() -> None:
    assert processes.parse_signal("KILL") is processes.parse_signal("sigkill") is signal.SIGKILL
    assert processes.parse_signal("hup") is signal.SIGHUP
    with pytest.raises(ValueError, match="KILL, TERM, STOP"):
        processes.parse_signal("9")


def test_stop_ends_a_stopped_process_at_once_rather_than_after_its_timeout(sleeper: int) -> None:
    started = processes.start_time(sleeper)
    os.kill(sleeper, signal.SIGSTOP)
    before = time.monotonic()
    processes.stop(sleeper, started, timeout=5)
    assert not processes.is_alive(sleeper, started) and time.monotonic() - before < 3


def test_lab_help_lists_restart_and_kill_with_the_signal_option() -> None:
    listing = _lab_cli("--help")
    assert listing.exit_code == 0 and "restart" in listing.stdout and "kill" in listing.stdout
    kill_help = _lab_cli("kill", "--help")
    assert kill_help.exit_code == 0 and "--signal" in kill_help.stdout and "KILL" in kill_help.stdout
    assert "controller" in _lab_cli("restart", "--help").stdout
