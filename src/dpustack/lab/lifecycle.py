"""`lab up/down/status`: a controller and N bare-metal agents as real local processes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import httpx

from dpustack.client import Client
from dpustack.lab import processes
from dpustack.lab.agents import AgentSpec, write_config
from dpustack.lab.image import write_boot_image
from dpustack.lab.state import LabError, LabProcess, LabState

Say = Callable[[str], None]

IMAGE_FILE = "boot.img"
# What a lab owns inside its directory; `up` starts from a clean slate, `down` keeps the logs.
_DATA = ("controller", "nodes", IMAGE_FILE)
_LOGS = "logs"
CONTROLLER_TIMEOUT = 60.0
NODES_TIMEOUT = 90.0


def _quiet(_: str) -> None:
    """The default `say`: print nothing."""


def is_running(state: LabState) -> bool:
    """True when every recorded process of the lab is alive."""
    return bool(state.processes) and all(processes.is_alive(p.pid, p.started) for p in state.processes)


def up(lab_dir: Path, bm: int, say: Say = _quiet) -> LabState:
    """Start a lab of one controller and `bm` bare-metal agents; return its state once every node is up."""
    if bm < 1:
        raise LabError("a lab needs at least one node (--bm 1 or more)")
    lab_dir = lab_dir.expanduser().resolve()
    previous = LabState.load(lab_dir)
    if previous is not None:
        if is_running(previous):
            raise LabError(f"a lab is already running in {lab_dir} (controller {previous.controller_url}); "
                           "stop it first with: dpustack lab down")
        say(f"Cleaning up a stale lab in {lab_dir} (some of its processes are gone)")
        _stop_all(previous)
    _remove(lab_dir, (*_DATA, _LOGS))
    lab_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = LabState(dir=str(lab_dir))
    try:
        admin = _start_controller(state, say)
        with Client(state.controller_url, admin) as client:
            _start_agents(state, client, bm, say)
            say(f"Waiting for {bm} node(s) to report up")
            _wait_until(lambda: _nodes_up(client, state.nodes), "every node to report up", state, NODES_TIMEOUT)
        state.image = str(write_boot_image(lab_dir / IMAGE_FILE))
        state.save()
    except BaseException:
        _stop_all(state)
        raise
    return state


def down(lab_dir: Path, say: Say = _quiet) -> LabState:
    """Stop every process of the lab in `lab_dir` and remove its state and data (logs stay)."""
    lab_dir = lab_dir.expanduser().resolve()
    state = LabState.load(lab_dir)
    if state is None:
        raise LabError(f"no lab in {lab_dir}")
    for proc in reversed(state.processes):
        say(f"Stopping {proc.name} (pid {proc.pid})")
    _stop_all(state)
    _remove(lab_dir, _DATA)
    return state


def load_lab(lab_dir: Path) -> LabState:
    """The state of a lab in `lab_dir`, or a LabError telling how to start one."""
    lab_dir = lab_dir.expanduser().resolve()
    state = LabState.load(lab_dir)
    if state is None:
        raise LabError(f"no lab in {lab_dir}; start one with: dpustack lab up --bm 2")
    return state


def _start_controller(state: LabState, say: Say) -> str:
    """Start the controller, wait for /healthz and its admin token; return that token."""
    lab_dir = Path(state.dir)
    port = processes.free_port()
    state.controller_url = f"http://127.0.0.1:{port}"
    state.controller_home = str(lab_dir / "controller")
    say(f"Starting the controller on {state.controller_url}")
    argv = processes.python_entry_point("dpustack.controller.main") + ["--bind", f"127.0.0.1:{port}"]
    _spawn(state, "controller", "controller", argv, state.controller_url,
           env={"DPUSTACK_HOME": state.controller_home})
    home = Path(state.controller_home)
    _wait_until(lambda: _healthy(state.controller_url) and (home / "admin-token").exists()
                and (home / "agent-credential").exists(), "the controller to answer /healthz", state,
                CONTROLLER_TIMEOUT)
    return state.admin_token()


def _start_agents(state: LabState, client: Client, count: int, say: Say) -> None:
    credential = (Path(state.controller_home) / "agent-credential").read_text().strip()
    for index in range(1, count + 1):
        hostname = f"dpu-bm-{index}"
        token = client.post("/v1/tokens", {"project": "admin", "role": "agent", "name": hostname})["token"]
        spec = AgentSpec(hostname=hostname, port=processes.free_port(), node_dir=Path(state.dir) / "nodes" / hostname,
                         controller_url=state.controller_url, controller_token=token, api_token=credential)
        config = write_config(spec, serial=f"LABBF2{index:06d}")
        say(f"Starting agent {hostname} on {spec.url}")
        argv = processes.python_entry_point("dpustack.agent.main") + ["--config", str(config)]
        _spawn(state, hostname, "agent", argv, spec.url, config=str(config))
        state.nodes.append(hostname)
        state.save()


def _spawn(state: LabState, name: str, role: str, argv: list[str], url: str, *,
           env: dict[str, str] | None = None, config: str | None = None) -> None:
    """Start one process and record it in the state file at once, so a crash cannot leak it."""
    log = Path(state.dir) / _LOGS / f"{name}.log"
    pid = processes.spawn(argv, log=log, env={**_clean_environment(), **(env or {})}, cwd=Path(state.dir))
    state.processes.append(LabProcess(name=name, role=role, pid=pid, started=processes.start_time(pid),
                                      url=url, log=str(log), config=config))
    state.save()


def _clean_environment() -> dict[str, str]:
    """This environment without DPUSTACK_* settings, so a user's own setup cannot leak into the lab."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DPUSTACK_")}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _nodes_up(client: Client, hostnames: list[str]) -> bool:
    up = {node["hostname"] for node in client.get("/v1/nodes") if node.get("status") == "up"}
    return set(hostnames) <= up


def _wait_until(ready: Callable[[], bool], what: str, state: LabState, timeout: float) -> None:
    """Poll `ready` until true; fail early, with the log's tail, if a lab process dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in state.processes:
            if not processes.is_alive(proc.pid, proc.started):
                raise LabError(f"{proc.name} exited while waiting for {what}; end of {proc.log}:\n"
                               f"{_tail(Path(proc.log))}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {Path(state.dir) / _LOGS}")
        time.sleep(0.2)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_all(state: LabState) -> None:
    """Stop the lab's processes, agents first, and forget them."""
    for proc in reversed(state.processes):
        processes.stop(proc.pid, proc.started)
    state.path.unlink(missing_ok=True)


def _remove(lab_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        path = lab_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
