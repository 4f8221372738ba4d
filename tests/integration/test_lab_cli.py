"""The issue's by-hand session, run with the real `dpustack` CLI against a real `lab up --bm 2`.

Every command is a subprocess, as a user would type it; the checks are what
a user would notice (tables, statuses, exit codes, messages on stderr).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_process import as_json, lab_env, processes_naming, run
from dpustack.drivers.bmc.ipmi import IpmiBmcDriver
from dpustack.drivers.bmc.redfish import RedfishBmcDriver
from dpustack.lab import lifecycle, processes
from dpustack.lab.guest_kernel import cache_dir
from dpustack.lab.host_machine import define_host
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.lab.state import LabError, LabState
from dpustack.linux import netns
from dpustack.secrets import decrypt
from dpustack.tls import client_context

STORAGE_DAEMON = "storage/qemu-storage-daemon"  # the storage node's qemu-storage-daemon, as `lab status` names it


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """`lab up --bm 2` in a temporary directory; `lab down` and a check that nothing survives, always."""
    lab_dir = tmp_path / "lab"
    recorded: list[tuple[int, int | None]] = []
    try:
        up = run("lab", "up", "--bm", "2", "--dir", str(lab_dir), ok=False)
        state = LabState.load(lab_dir)
        recorded = [(p.pid, p.started) for p in state.processes] if state else []
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        yield lab_dir, up
    finally:
        state = LabState.load(lab_dir)  # None: `lab up` failed and cleaned up, or the test ran `lab down`
        recorded += [(p.pid, p.started) for p in state.processes] if state else []
        down = run("lab", "down", "--dir", str(lab_dir), ok=False)
        survivors = [pid for pid, started in recorded if processes.is_alive(pid, started)]
        for pid, started in recorded:  # never leak processes, even when the test failed
            processes.stop(pid, started, timeout=2)
        assert not survivors, f"lab processes survived `lab down`: {survivors}\n{down.stdout}\n{down.stderr}"
        assert down.returncode == 0 or state is None, down.stderr


def server(name: str, env: dict[str, str]) -> dict:
    return as_json("server", "show", name, env=env)


def test_by_hand_bare_metal_session(lab: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    lab_dir, up = lab
    state = LabState.load(lab_dir)
    assert state is not None
    image = state.image

    # `lab up` says how to reach it, and never shows a BMC password.
    assert state.controller_url in up.stdout and image in up.stdout
    assert 'eval "$(dpustack lab env' in up.stdout
    for hostname in state.nodes:
        bmc = tomllib.loads((lab_dir / "nodes" / hostname / "agent.toml").read_text())["bmc"]
        password = decrypt(bmc["password_encrypted"], key_file=Path(bmc["secret_key_file"]))
        assert password not in up.stdout + up.stderr
        assert password not in (lab_dir / "logs" / f"{hostname}.log").read_text()
    assert oct((lab_dir / "lab.json").stat().st_mode & 0o777) == "0o600"
    again = run("lab", "up", "--bm", "2", "--dir", str(lab_dir), ok=False)
    assert again.returncode != 0 and "already running" in again.stderr

    env = lab_env(lab_dir)
    assert env["DPUSTACK_URL"] == state.controller_url

    # the storage node's daemon, the controller and two agents, all alive
    status = run("lab", "status", "--dir", str(lab_dir)).stdout
    assert status.count("yes") == 4 and "controller" in status and STORAGE_DAEMON in status
    storage = _status(lab_dir)[STORAGE_DAEMON]
    assert storage["role"] == "storage" and storage["alive"] and storage["url"].startswith("nbd://127.0.0.1:")
    daemon = state.process(STORAGE_DAEMON)

    # node list: two bare-metal nodes, both up.
    table = run("node", "list", env=env).stdout
    assert "dpu-bm-1" in table and "dpu-bm-2" in table
    nodes = as_json("node", "list", env=env)
    assert sorted((n["hostname"], n["status"]) for n in nodes) == [("dpu-bm-1", "up"), ("dpu-bm-2", "up")]

    run("flavor", "create", "bm.small", "--vcpus", "8", "--ram", "16384", "--disk", "40", "--type", "bm", env=env)
    created = as_json("image", "create", "centos", "--file", image, env=env)
    assert created["status"] == "active" and created["size"] == Path(image).stat().st_size
    run("network", "create", "net1", "--subnet", "10.10.0.0/24", env=env)

    # create with --wait: the steps scroll by on stderr, the server ends ACTIVE.
    web1 = run("server", "create", "web1", "--flavor", "bm.small", "--image", "centos", "--network", "net1",
               "--wait", env=env)
    assert "✓" in web1.stderr and "is ACTIVE" in web1.stdout
    assert "ACTIVE" in run("server", "show", "web1", env=env).stdout
    first_node = server("web1", env)["node"]
    other_node = next(n for n in state.nodes if n != first_node)

    # without --wait: the operation id, which `operation show` then follows.
    web2 = run("server", "create", "web2", "--flavor", "bm.small", "--image", "centos", "--network", "net1",
               "--node", other_node, env=env)
    op_id = re.search(r"operation ([0-9a-f-]{36})", web2.stdout).group(1)
    final = None
    for _ in range(300):
        final = as_json("operation", "show", op_id, env=env)
        if final["status"] in ("succeeded", "failed"):
            break
    assert final is not None and final["status"] == "succeeded", final
    assert "schedule" in run("operation", "show", op_id, env=env).stdout
    assert server("web2", env)["node"] == other_node

    ports_before = {p["id"] for p in as_json("port", "list", "--server", "web1", env=env)}
    run("server", "add-nic", "web1", "--network", "net1", "--wait", env=env)
    ports = as_json("port", "list", "--server", "web1", env=env)
    added = [p["id"] for p in ports if p["id"] not in ports_before]
    assert len(ports) == 2 and len(added) == 1

    run("volume", "create", "data1", "--size", "10", "--wait", env=env)
    run("server", "add-volume", "web1", "data1", "--wait", env=env)
    assert as_json("volume", "show", "data1", env=env)["status"] == "in-use"

    console = as_json("server", "console", "web1", "--url", env=env)
    assert console["url"]
    typed = run("server", "console", "web1", "--for", "2", input="hello console\r", env=env)
    assert "hello console" in typed.stdout  # through the controller and the agent; the memory BMC's port echoes
    assert run("server", "console-log", "web1", env=env).stdout.rstrip().endswith("hello console")

    run("server", "stop", "web1", "--wait", env=env)
    assert server("web1", env)["status"] == "SHUTOFF"
    assert "SHUTOFF" in run("server", "list", env=env).stdout
    run("server", "start", "web1", "--wait", env=env)
    assert server("web1", env)["status"] == "ACTIVE"
    run("server", "reboot", "web1", "--hard", "--wait", env=env)
    assert server("web1", env)["status"] == "ACTIVE"

    run("server", "remove-volume", "web1", "data1", "--wait", env=env)
    assert as_json("volume", "show", "data1", env=env)["status"] == "available"
    run("server", "remove-nic", "web1", added[0], "--wait", env=env)
    assert [p["id"] for p in as_json("port", "list", "--server", "web1", env=env)] == sorted(ports_before)

    actions = [op["action"] for op in as_json("operation", "list", "--server", "web1", env=env)]
    assert {"create", "add_nic", "add_volume", "stop", "start", "reboot", "remove_volume",
            "remove_nic"} <= set(actions)

    # A create that cannot fit fails with the fault on stderr, and a bad name is one line.
    web3 = run("server", "create", "web3", "--flavor", "bm.small", "--network", "net1", "--wait", env=env,
               ok=False)
    assert web3.returncode != 0
    assert "error: create web3 failed at step 'schedule'" in web3.stderr and "no valid node" in web3.stderr
    assert server("web3", env)["status"] == "ERROR"
    run("server", "delete", "web3", "--wait", env=env)
    missing = run("server", "show", "nope", env=env, ok=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error:")

    run("server", "delete", "web1", "--wait", env=env)
    run("server", "delete", "web2", "--wait", env=env)
    assert as_json("server", "list", env=env) == []

    # `lab down` stops the storage node's daemon with the rest: no process of the lab is left
    run("lab", "down", "--dir", str(lab_dir))
    assert not processes.is_alive(daemon.pid, daemon.started)
    assert not processes_naming(lab_dir) and run("lab", "status", "--dir", str(lab_dir), ok=False).returncode == 1


def test_up_after_a_crash_cleans_the_leftovers_first(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    old: list[tuple[int, int | None]] = []
    try:
        run("lab", "up", "--bm", "1", "--dir", str(lab_dir))
        state = LabState.load(lab_dir)
        assert state is not None
        old = [(p.pid, p.started) for p in state.processes]
        controller = next(p for p in state.processes if p.role == "controller")
        os.kill(controller.pid, 9)  # the crash: the agent and the storage daemon survive, the state file stays
        again = run("lab", "up", "--bm", "1", "--dir", str(lab_dir))
        assert "stale" in again.stderr
        assert not any(processes.is_alive(pid, started) for pid, started in old)
        assert run("lab", "status", "--dir", str(lab_dir)).stdout.count("yes") == 3  # storage, controller, agent
    finally:
        run("lab", "down", "--dir", str(lab_dir), ok=False)
        for pid, started in old:
            processes.stop(pid, started, timeout=2)


def test_a_failed_up_stops_what_it_started_and_shows_the_log(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_config(spec: lifecycle.AgentSpec, serial: str) -> Path:
        spec.node_dir.mkdir(parents=True, exist_ok=True)
        spec.config_path.write_text(f'hostname = "{spec.hostname}"\n')  # no [controller] nor [api]
        return spec.config_path

    monkeypatch.setattr(lifecycle, "write_config", broken_config)
    started: dict[str, tuple[int, int | None]] = {}
    monkeypatch.setattr(lifecycle.LabState, "save", lambda self: started.update(
        (p.name, (p.pid, p.started)) for p in self.processes if p.name not in started))
    with pytest.raises(LabError, match="dpu-bm-1 exited") as failure:
        lifecycle.up(tmp_path / "lab", 1)
    assert "controller" in str(failure.value)  # the agent's own message names the missing section
    assert sorted(started) == sorted([STORAGE_DAEMON, "controller", "dpu-bm-1"])
    assert not any(processes.is_alive(pid, when) for pid, when in started.values())


def test_by_hand_pci_session(lab: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """Issue 3's commands against the real lab: node 1 has an Intel NIC with VFs, node 2 two GPUs."""
    lab_dir, up = lab
    env = lab_env(lab_dir)
    image = str(LabState.load(lab_dir).image)

    devices = as_json("pci", "device", "list", env=env)
    assert {d["node"] for d in devices} == {"dpu-bm-1", "dpu-bm-2"}
    bluefield_vfs = [d for d in devices if (d["vendor_id"], d["product_id"]) == ("15b3", "101e")]
    assert bluefield_vfs and all(d["card_serial_number"] and d["extra_info"]["remote_managed"] == "true"
                                 for d in bluefield_vfs)
    assert "dpu-bm-2" in run("pci", "pool", "list", "--node", "dpu-bm-2", env=env).stdout

    run("pci-flavor", "create", "bigGPU", "--description", "any GPU", env=env)
    run("pci-flavor", "update", "bigGPU", "--set", "vendor_id=8086", "--set", "product_id=000[1-2]", env=env)
    assert as_json("pci-flavor", "show", "0", env=env)["name"] == "_flavor_attrs"
    run("pci-flavor", "create", "phy2_NIC", env=env)
    run("pci-flavor", "update", "phy2_NIC", "--set", "physical_network=physnet2", env=env)
    assert {"bigGPU", "phy2_NIC"} <= {f["name"] for f in as_json("pci-flavor", "list", env=env)}

    run("flavor", "create", "m1.small", "--vcpus", "8", "--ram", "16384", "--disk", "40", "--type", "bm", env=env)
    run("flavor", "set", "m1.small", "--property", "pci_passthrough:pci_flavor=1:bigGPU;", env=env)
    run("image", "create", "img", "--file", image, env=env)
    run("network", "create", "net1", "--subnet", "10.10.0.0/24", env=env)
    run("server", "create", "s1", "--flavor", "m1.small", "--image", "img", "--network", "net1", "--wait", env=env)
    s1 = server("s1", env)
    (request,) = s1["pci_requests"]
    assert s1["node"] == "dpu-bm-2" and request["devices"][0]["vendor_id"] == "8086"

    run("flavor", "create", "bm.plain", "--vcpus", "8", "--ram", "16384", "--disk", "40", "--type", "bm", env=env)
    run("server", "create", "s2", "--flavor", "bm.plain", "--image", "img",
        "--nic", "net-id=net1,pci-flavor=1:phy2_NIC", "--wait", env=env)
    s2 = server("s2", env)
    (vf,) = s2["pci_requests"][0]["devices"]
    assert s2["node"] == "dpu-bm-1" and vf["dev_type"] == "type-VF" and vf["extra_info"]["physical_network"] == "physnet2"
    assert "PCI requests" in run("server", "show", "s2", env=env).stdout

    for name in ("s1", "s2"):
        run("server", "delete", name, "--wait", env=env)
    assert {d["status"] for d in as_json("pci", "device", "list", env=env)} == {"available"}


def _status(lab_dir: Path) -> dict[str, dict]:
    """`lab status -f json`, by process name."""
    return {p["name"]: p for p in as_json("lab", "status", "--dir", str(lab_dir), env={})["processes"]}


def test_restart_and_kill_one_process_keep_status_and_down_true(tmp_path: Path) -> None:
    """A fault tester restarts an agent and the controller, then kills the agent, with the real CLI."""
    lab_dir = tmp_path / "lab"
    recorded: list[tuple[int, int | None]] = []

    def remember() -> None:
        state = LabState.load(lab_dir)
        recorded.extend((p.pid, p.started) for p in state.processes if (p.pid, p.started) not in recorded)

    try:
        run("lab", "up", "--bm", "1", "--dir", str(lab_dir))
        remember()
        env = lab_env(lab_dir)
        before = _status(lab_dir)
        assert set(before) == {STORAGE_DAEMON, "controller", "dpu-bm-1"}

        agent = run("lab", "restart", "dpu-bm-1", "--dir", str(lab_dir))
        remember()
        after_agent = _status(lab_dir)
        assert after_agent["dpu-bm-1"]["alive"] and after_agent["dpu-bm-1"]["pid"] != before["dpu-bm-1"]["pid"]
        assert str(after_agent["dpu-bm-1"]["pid"]) in agent.stdout
        assert not processes.is_alive(*next((pid, started) for pid, started in recorded
                                            if pid == before["dpu-bm-1"]["pid"]))
        assert [(n["hostname"], n["status"]) for n in as_json("node", "list", env=env)] == [("dpu-bm-1", "up")]

        run("lab", "restart", "controller", "--dir", str(lab_dir))
        remember()
        after_controller = _status(lab_dir)
        assert all(p["alive"] for p in after_controller.values())
        assert after_controller["controller"]["pid"] != before["controller"]["pid"]
        assert after_controller[STORAGE_DAEMON]["pid"] == before[STORAGE_DAEMON]["pid"]  # only the one named
        # the cloud still works through the restarted controller, with the same admin token and storage
        assert [(n["hostname"], n["status"]) for n in as_json("node", "list", env=env)] == [("dpu-bm-1", "up")]
        run("network", "create", "net1", "--subnet", "10.10.0.0/24", env=env)
        run("volume", "create", "vol1", "--size", "1", "--wait", env=env)
        assert as_json("volume", "show", "vol1", env=env)["status"] == "available"

        no_dpu = run("lab", "soc-reboot", "dpu-bm-1", "--dir", str(lab_dir), ok=False)
        assert no_dpu.returncode != 0 and "--dataplane ovn" in no_dpu.stderr, no_dpu.stderr
        assert _status(lab_dir)["dpu-bm-1"]["pid"] == after_agent["dpu-bm-1"]["pid"]  # refused: nothing stopped

        killed = run("lab", "kill", "dpu-bm-1", "--signal", "KILL", "--dir", str(lab_dir))
        assert "SIGKILL" in killed.stdout and "lab restart dpu-bm-1" in killed.stdout
        after_kill = _status(lab_dir)
        assert not after_kill["dpu-bm-1"]["alive"] and after_kill["controller"]["alive"]
        assert after_kill[STORAGE_DAEMON]["alive"]
        again = run("lab", "kill", "dpu-bm-1", "--dir", str(lab_dir), ok=False)
        assert again.returncode == 1 and "not running" in again.stderr

        unknown = run("lab", "restart", "nope", "--dir", str(lab_dir), ok=False)
        assert unknown.returncode == 1 and f"{STORAGE_DAEMON}, controller, dpu-bm-1" in unknown.stderr

        run("lab", "down", "--dir", str(lab_dir))
        assert not [pid for pid, started in recorded if processes.is_alive(pid, started)]
        assert not processes_naming(lab_dir)
    finally:
        run("lab", "down", "--dir", str(lab_dir), ok=False)
        for pid, started in recorded:
            processes.stop(pid, started, timeout=2)


def test_restart_brings_both_bmc_emulators_back_with_the_same_login(tmp_path: Path) -> None:
    """The emulators of an OVN lab's nodes, recorded as `lab up` records them, each driving its host machine
    (defined and off, on a libvirtd in a namespace of its own)."""
    state = LabState(dir=str(tmp_path))
    daemons = []
    suffix = os.urandom(3).hex()
    try:
        for hostname in ("dpu-bm-1", "dpu-bm-2"):
            namespace = f"dpt-{suffix}-{hostname[-1]}"
            netns.create(namespace)
            daemon = LibvirtDaemon(tmp_path / hostname / "lv", namespace, cache=cache_dir() / "libvirt")
            daemons.append(daemon)
            daemon.start()
            define_host(daemon.uri, "host", console_log=tmp_path / hostname / "console.log",
                        command_socket=tmp_path / hostname / "ttyS1.sock")
            state.machines[hostname] = {"uri": daemon.uri, "domain": "host"}
        redfish = lifecycle._start_bmc(state, "dpu-bm-1", 1, lambda _: None)
        ipmi = lifecycle._start_bmc(state, "dpu-bm-2", 2, lambda _: None)
        for name in ("dpu-bm-1/bmc-redfish", "dpu-bm-2/bmc-ipmi"):
            run("lab", "restart", name, "--dir", str(tmp_path))
        after = _status(tmp_path)
        assert after["dpu-bm-1/bmc-redfish"]["pid"] != redfish.pid and after["dpu-bm-2/bmc-ipmi"]["pid"] != ipmi.pid
        assert all(p["alive"] for p in after.values())
        assert RedfishBmcDriver(redfish.access(), mem=1, cpu=1).power_state() == "off"  # the machines are defined off
        assert IpmiBmcDriver(ipmi.access(), port=ipmi.port, cpu=1, mem=1).power_state() == "off"
        run("lab", "down", "--dir", str(tmp_path))
    finally:
        for proc in (LabState.load(tmp_path) or state).processes:
            processes.stop(proc.pid, proc.started, timeout=2)
        for daemon in daemons:
            daemon.stop()
            netns.delete(daemon.netns)
    assert not processes_naming(tmp_path)


def test_by_hand_node_session_per_node_credentials_rotation_and_maintenance(
        lab: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    lab_dir, _ = lab
    env = lab_env(lab_dir)
    configs = {h: tomllib.loads((lab_dir / "nodes" / h / "agent.toml").read_text()) for h in ("dpu-bm-1", "dpu-bm-2")}
    # each node holds its own report token and only the hash of the controller's credential for it, over TLS
    assert configs["dpu-bm-1"]["controller"]["token"] != configs["dpu-bm-2"]["controller"]["token"]
    digests = {c["api"]["controller_credential_sha256"] for c in configs.values()}
    assert len(digests) == 2 and all(len(d) == 64 for d in digests)
    assert env["DPUSTACK_URL"].startswith("https://") and configs["dpu-bm-1"]["advertise_url"].startswith("https://")

    # rotation between real processes: the old report token is refused, the node stays up and buildable
    old_token = configs["dpu-bm-1"]["controller"]["token"]
    rotated = as_json("node", "rotate-credentials", "dpu-bm-1", env=env)
    assert rotated["hostname"] == "dpu-bm-1" and rotated["status"] == "up"
    saved = json.loads((lab_dir / "nodes" / "dpu-bm-1" / "state" / "credentials.json").read_text())
    assert saved["report_token"] != old_token
    report = {"hostname": "dpu-bm-1", "ready": True, "node_type": "bm", "total_cpu": 1, "used_cpu": 0,
              "total_mem": 1, "used_mem": 0, "agent_url": "https://127.0.0.1:1"}
    refused = httpx.post(f"{env['DPUSTACK_URL']}/v1/nodes/report", json=report, verify=client_context(
        env["DPUSTACK_CACERT"]), headers={"Authorization": f"Bearer {old_token}"})
    assert refused.status_code == 401
    run("flavor", "create", "bm.tiny", "--vcpus", "1", "--ram", "1024", "--disk", "1", "--type", "bm", env=env)
    run("image", "create", "img", "--file", LabState.load(lab_dir).image, env=env)
    run("network", "create", "net1", "--subnet", "10.10.0.0/24", env=env)
    run("server", "create", "s1", "--flavor", "bm.tiny", "--image", "img", "--network", "net1",
        "--node", "dpu-bm-1", "--wait", env=env)

    # maintenance: never scheduled, then back; a node with an instance is not deleted
    run("node", "set", "dpu-bm-2", "--maintenance", env=env)
    assert as_json("node", "show", "dpu-bm-2", env=env)["maintenance"] is True
    blocked = run("server", "create", "s2", "--flavor", "bm.tiny", "--image", "img", "--network", "net1",
                  "--node", "dpu-bm-2", "--wait", env=env, ok=False)
    assert blocked.returncode != 0 and "in maintenance" in blocked.stderr
    run("server", "delete", "s2", "--wait", env=env)
    run("node", "set", "dpu-bm-2", "--no-maintenance", env=env)
    refused_delete = run("node", "delete", "dpu-bm-1", env=env, ok=False)
    assert refused_delete.returncode == 1 and "still has 1 instance" in refused_delete.stderr
    run("server", "delete", "s1", "--wait", env=env)

    # enrolment shows the new node's pair once; an empty node is deleted
    enrolled = as_json("node", "enroll", "dpu-bm-9", env=env)
    assert enrolled["report_token"] and len(enrolled["controller_credential_sha256"]) == 64
    assert as_json("node", "show", "dpu-bm-9", env=env)["status"] == "enrolled"
    run("node", "delete", "dpu-bm-9", env=env)
    assert sorted(n["hostname"] for n in as_json("node", "list", env=env)) == ["dpu-bm-1", "dpu-bm-2"]
