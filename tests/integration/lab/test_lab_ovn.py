"""`lab up --bm 2 --dataplane ovn` through the real CLI: two servers' hosts boot, then DHCP, metadata and ping
between them, seen from inside the hosts (`lab exec --server`, `lab metadata`).

Every command is a subprocess of the `dpustack` CLI, as in tests/integration/test_lab_cli.py; the lab
is always stopped with `lab down`, after which no namespace and no process of it may be left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cli_process import as_json, lab_env, run
from dpustack.lab import processes
from dpustack.lab.host_init import step_lines
from dpustack.lab.state import LabState
from dpustack.linux import netns

_NEEDED = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "ping", "ethtool", "ipmitool", "libvirtd",
           "qemu-system-x86_64", "syslinux")
BOOT_TIMEOUT = 120.0
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the OVN lab needs root (namespaces)"),
    pytest.mark.skipif(any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
                           for p in _NEEDED), reason=f"needs {', '.join(_NEEDED)}"),
]


def _ping(lab_dir: Path, server: str, ip: str) -> subprocess.CompletedProcess[str]:
    return run("lab", "exec", "--dir", str(lab_dir), "--server", server, "--", "ping", "-c", "3", "-W", "2",
               "-i", "0.5", ip, ok=False, timeout=30)


def _received(ping: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"(\d+) (?:packets )?received", ping.stdout)
    return int(found.group(1)) if found else 0


def _wait_ready(state: LabState, node: str) -> list[dict]:
    """The console steps of the host machine of ``node`` once it printed ``ready``."""
    console = Path(state.machines[node]["console"])
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        steps = step_lines(console.read_text(errors="replace")) if console.exists() else []
        assert not [s for s in steps if s["step"] == "failed"], steps
        if any(s["step"] == "ready" for s in steps):
            return steps
        assert time.monotonic() < deadline, f"the host of {node} is not ready after {BOOT_TIMEOUT:g} s: {steps}"
        time.sleep(0.3)


def _representors(lab_dir: Path, state: LabState) -> dict[str, list[str]]:
    """Ports on each DPU's br-int other than OVN's own Geneve tunnel ports (ovn-<chassis>-N)."""
    found = {}
    for hostname in state.nodes:
        db = f"unix:{lab_dir / 'dp' / hostname / 'db.sock'}"
        ports = run("lab", "exec", "--dir", str(lab_dir), hostname, "--", "ovs-vsctl", f"--db={db}",
                    "list-ports", "br-int").stdout.split()
        found[hostname] = [p for p in ports if not p.startswith("ovn-")]
    return found


def _pci_functions(lab_dir: Path, server: str) -> dict[str, str]:
    """What the guest of ``server`` sees on its PCI buses, as `lspci -n` would: BDF -> "vendor device class"."""
    script = 'for d in /sys/bus/pci/devices/*; do echo "${d##*/}" $(cat "$d/vendor" "$d/device" "$d/class"); done'
    lines = run("lab", "exec", "--dir", str(lab_dir), "--server", server, "--", "sh", "-c", script).stdout
    return dict(line.split(" ", 1) for line in lines.splitlines() if line.strip())


def _boot_disk(state: LabState, node: str) -> str:
    """The disk the host of ``node`` booted from, as its console's ``boot`` step named it (``vda``)."""
    (disk,) = [s["disk"] for s in step_lines(Path(state.machines[node]["console"]).read_text(errors="replace"))
               if s["step"] == "boot"]
    return disk.removeprefix("/dev/")


def _eventually(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _public_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " test@lab\n"


def test_two_servers_boot_get_their_ip_by_dhcp_and_metadata_and_ping_across_the_dpus() -> None:
    lab_dir = Path(tempfile.mkdtemp(prefix="dps-lab-", dir="/tmp"))  # short: unix socket paths
    recorded: list[tuple[int, int | None]] = []
    namespaces: list[str] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        up = run("lab", "up", "--bm", "2", "--dataplane", "ovn", "--dir", str(lab_dir), ok=False)
        state = LabState.load(lab_dir)
        if state is not None:
            recorded = [(p.pid, p.started) for p in state.processes]
            namespaces = state.all_namespaces() + ["dpustack-lab-ul", "dpustack-lab-st"]
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        timings["lab up"] = time.monotonic() - started
        assert state.namespaces == {"dpu-bm-1": {"dpu": "dpu-bm-1", "host": "host-bm-1"},
                                    "dpu-bm-2": {"dpu": "dpu-bm-2", "host": "host-bm-2"}}
        assert {p.role for p in state.processes} == {"ovn", "storage", "dpu", "host", "controller", "bmc", "agent"}
        assert set(state.machines) == {"dpu-bm-1", "dpu-bm-2"}
        assert all(netns.exists(name) for name in namespaces)
        for hostname in state.nodes:  # the chassis is the node's hostname, with its card's serial
            config = (lab_dir / "nodes" / hostname / "agent.toml").read_text()
            assert 'functions = "lab"' in config and 'switch = "ovs"' in config and 'storage = "qsd"' in config
        assert 'bmc = "redfish"' in (lab_dir / "nodes" / "dpu-bm-1" / "agent.toml").read_text()
        assert 'bmc = "ipmi"' in (lab_dir / "nodes" / "dpu-bm-2" / "agent.toml").read_text()
        sb = f"unix:{lab_dir / 'dp' / 'ovn' / 'sb.sock'}"
        chassis = subprocess.run(["ovn-sbctl", f"--db={sb}", "--bare", "--columns=name,other_config", "list",
                                  "Chassis"], capture_output=True, text=True, check=True).stdout
        assert "dpu-bm-1" in chassis and "card-serial-number=MT2146X00001" in chassis, chassis

        env = lab_env(lab_dir)
        run("network", "create", "net1", "--subnet", "10.70.0.0/24", env=env)
        run("flavor", "create", "bm.tiny", "--vcpus", "1", "--ram", "256", "--disk", "1", "--type", "bm", env=env)
        run("image", "create", "img", "--file", state.image, env=env)
        key_file, user_data = lab_dir / "k1.pub", lab_dir / "user-data"
        key_file.write_text(_public_key())
        user_data.write_text("#!/bin/sh\necho user data ran > /root/ran\n")
        run("keypair", "create", "k1", "--public-key", str(key_file), env=env)
        ips = {}
        for name, node in (("s1", "dpu-bm-1"), ("s2", "dpu-bm-2")):
            extra = ["--key-name", "k1", "--user-data-file", str(user_data)] if name == "s1" else []
            run("server", "create", name, "--flavor", "bm.tiny", "--image", "img", "--network", "net1",
                "--node", node, "--wait", *extra, env=env)
            assert as_json("server", "show", name, env=env)["node"] == node
            (port,) = as_json("port", "list", "--server", name, env=env)
            ips[name] = port["fixed_ips"][0]["ip_address"]
        timings["servers active"] = time.monotonic() - started

        for name, node in (("s1", "dpu-bm-1"), ("s2", "dpu-bm-2")):  # each host took its address by DHCP
            steps = _wait_ready(state, node)
            assert [s["address"] for s in steps if s["step"] == "dhcp"] == [f"{ips[name]}/24"], steps
            addr = run("lab", "exec", "--dir", str(lab_dir), "--server", name, "--", "ip", "-4", "addr").stdout
            assert f"inet {ips[name]}/24" in addr, addr
        timings["hosts ready"] = time.monotonic() - started
        assert run("lab", "exec", "--dir", str(lab_dir), "--server", "s1", "--", "cat", "/root/ran").stdout == \
            "user data ran\n"

        # each host reads its own metadata at 169.254.169.254; s2 was given no user data
        meta = json.loads(run("lab", "metadata", "--dir", str(lab_dir), "--server", "s1").stdout)
        assert (meta["name"], meta["hostname"]) == ("s1", "s1")
        assert meta["public_keys"] == {"k1": key_file.read_text().strip()}
        assert run("lab", "metadata", "--dir", str(lab_dir), "--server", "s1",
                   "openstack/latest/user_data").stdout == user_data.read_text()
        assert json.loads(run("lab", "metadata", "--dir", str(lab_dir), "--server", "s2").stdout)["name"] == "s2"
        missing = run("lab", "metadata", "--dir", str(lab_dir), "--server", "s2", "openstack/latest/user_data",
                      ok=False)
        assert missing.returncode != 0 and "404" in missing.stderr, missing.stderr

        ping = _ping(lab_dir, "s1", ips["s2"])
        # the first echo may be lost while the userspace tunnel resolves its neighbour (tnl/neigh)
        assert ping.returncode == 0 and _received(ping) >= 2, ping.stdout + ping.stderr
        timings["ping"] = time.monotonic() - started

        # a SoC reboot of s1's DPU: its daemons and namespace go and come back; the host runs on, and the agent
        # puts s1's functions back at the same BDFs (the guest sees no device change), its port and its disk
        functions = _pci_functions(lab_dir, "s1")
        (boot_bdf,) = [a["bdf"] for v in as_json("volume", "list", env=env) for a in v["attachments"]
                       if a["node"] == "dpu-bm-1"]
        (port,) = as_json("port", "list", "--server", "s1", env=env)
        assert {boot_bdf, port["binding_profile"]["bdf"]} <= set(functions), functions  # as the snic API said
        old_daemons = {p.name: p.pid for p in state.processes if p.role == "dpu" and p.name.startswith("dpu-bm-1/")}
        run("lab", "soc-reboot", "dpu-bm-1", "--dir", str(lab_dir), timeout=180)
        state = LabState.load(lab_dir)
        recorded += [(p.pid, p.started) for p in state.processes]
        new_daemons = {p.name: p.pid for p in state.processes if p.role == "dpu" and p.name.startswith("dpu-bm-1/")}
        assert set(new_daemons) == set(old_daemons) and not set(new_daemons.values()) & set(old_daemons.values())
        assert _pci_functions(lab_dir, "s1") == functions
        assert _eventually(lambda: _received(_ping(lab_dir, "s1", ips["s2"])) >= 2, 60), "no ping after the reboot"
        assert run("lab", "exec", "--dir", str(lab_dir), "--server", "s1", "--", "sh", "-c",
                   f"echo 3 > /proc/sys/vm/drop_caches; head -c 1048576 /dev/{_boot_disk(state, 'dpu-bm-1')} | "
                   "wc -c").stdout.strip() == "1048576"  # read from the volume again, not from the guest's cache
        timings["soc reboot"] = time.monotonic() - started

        run("server", "delete", "s2", "--wait", env=env)
        silent = _ping(lab_dir, "s1", ips["s2"])
        assert silent.returncode != 0 and _received(silent) == 0, silent.stdout

        # `lab exec` passes the command's exit code through, and refuses foreign namespaces
        assert run("lab", "exec", "--dir", str(lab_dir), "host-bm-1", "--", "sh", "-c", "exit 7",
                   ok=False).returncode == 7
        assert run("lab", "exec", "--dir", str(lab_dir), "--server", "s1", "--", "sh", "-c", "exit 5",
                   ok=False).returncode == 5
        assert run("lab", "exec", "--dir", str(lab_dir), "nope", "--", "true", ok=False).returncode != 0

        run("server", "delete", "s1", "--wait", env=env)
        assert as_json("server", "list", env=env) == []
        assert _representors(lab_dir, state) == {"dpu-bm-1": [], "dpu-bm-2": []}
        timings["total"] = time.monotonic() - started
        print("\nOVN lab timings (s since start): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    finally:
        state = LabState.load(lab_dir)
        recorded += [(p.pid, p.started) for p in state.processes] if state else []
        down = run("lab", "down", "--dir", str(lab_dir), ok=False)
        survivors = [pid for pid, when in recorded if processes.is_alive(pid, when)]
        for pid, when in recorded:
            processes.stop(pid, when, timeout=2)
        left_ns = [name for name in namespaces if netns.exists(name)]
        for name in left_ns:
            netns.delete(name)
        left_pids = subprocess.run(["pgrep", "-f", str(lab_dir)], capture_output=True, text=True).stdout.split()
        shutil.rmtree(lab_dir, ignore_errors=True)
        assert not survivors, f"lab processes survived `lab down`: {survivors}\n{down.stdout}\n{down.stderr}"
        assert not left_ns, f"namespaces left behind: {left_ns}"
        assert not left_pids, f"processes left behind: {left_pids}"
        assert down.returncode == 0 or not recorded, down.stderr
        assert not [n for n in netns.names() if n in ("dpu-bm-1", "dpu-bm-2", "host-bm-1", "host-bm-2")]


def test_a_second_up_after_a_crash_cleans_the_leftovers() -> None:
    lab_dir = Path(tempfile.mkdtemp(prefix="dps-lab-", dir="/tmp"))
    old: list[tuple[int, int | None]] = []
    try:
        run("lab", "up", "--bm", "1", "--dataplane", "ovn", "--dir", str(lab_dir))
        state = LabState.load(lab_dir)
        old = [(p.pid, p.started) for p in state.processes]
        controller = next(p for p in state.processes if p.role == "controller")
        os.kill(controller.pid, 9)  # the crash: daemons and namespaces stay, so does lab.json
        again = run("lab", "up", "--bm", "1", "--dataplane", "ovn", "--dir", str(lab_dir))
        assert "stale" in again.stderr
        assert not any(processes.is_alive(pid, when) for pid, when in old)
        fresh = LabState.load(lab_dir)
        assert all(processes.is_alive(p.pid, p.started) for p in fresh.processes)
        assert all(netns.exists(name) for name in fresh.all_namespaces())
    finally:
        state = LabState.load(lab_dir)
        run("lab", "down", "--dir", str(lab_dir), ok=False)
        for pid, when in old + ([(p.pid, p.started) for p in state.processes] if state else []):
            processes.stop(pid, when, timeout=2)
        left_pids = subprocess.run(["pgrep", "-f", str(lab_dir)], capture_output=True, text=True).stdout.split()
        shutil.rmtree(lab_dir, ignore_errors=True)
        assert not [n for n in netns.names() if n in ("dpu-bm-1", "host-bm-1", "dpustack-lab-ul")]
        assert not left_pids, f"processes left behind: {left_pids}"
