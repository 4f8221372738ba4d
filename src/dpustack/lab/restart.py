"""`lab restart NAME`, `lab kill NAME` and `lab soc-reboot NODE`: one process, or one DPU, of a running lab, for
fault tests.

A restart starts the command recorded in lab.json again (never a re-derived one), and records the
new pid and start time before it waits, so `lab status` and `lab down` always see the process that
runs. A kill leaves the record alone: `status` shows the process dead and `restart` brings it back.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from dpustack.client import Client
from dpustack.errors import DpustackError
from dpustack.lab import bmcs, processes
from dpustack.lab.dataplane import DataPlane
from dpustack.lab.lifecycle import (CONTROLLER_TIMEOUT, NODES_TIMEOUT, Say, _quiet, _tail, dataplane_dir, healthy,
                                    launch, load_lab, record_dpu)
from dpustack.lab.state import LabError, LabProcess, LabState, locked

# Signals after which a process does not end: it stops, resumes, or merely takes note.
STOPPING = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
NOT_ENDING = STOPPING | {signal.SIGCONT, signal.SIGWINCH, signal.SIGCHLD, signal.SIGURG}
KILL_WAIT = 10.0  # seconds `kill` waits for a signalled process to end
STOP_WAIT = 2.0  # seconds `kill` waits for a process to stop or resume (signals are delivered asynchronously)


def restart(lab_dir: Path, name: str, say: Say = _quiet) -> tuple[int, LabProcess]:
    """Stop the process `name` (if it runs), start its recorded command again, wait until it serves.

    Returns the old pid and the new record. Serving means: the controller answers /healthz; an agent
    answers /healthz and its node has reported up since the restart; a BMC emulator answers."""
    lab_dir = lab_dir.expanduser().resolve()
    with locked(lab_dir):
        state = load_lab(lab_dir)
        proc = state.process(name)
        if not proc.restartable:
            raise LabError(_why_not_restartable(state, proc))
        old_pid = proc.pid
        _stop(proc, say)
        since = datetime.now(timezone.utc)
        log_offset = _size(Path(proc.log))
        launch(proc)
        state.save()
    say(f"Started {name} (pid {proc.pid}); waiting until it serves")
    _wait_serving(state, proc, since, log_offset, say)
    return old_pid, proc


def soc_reboot(lab_dir: Path, hostname: str, say: Say = _quiet) -> LabProcess:
    """Reboot the SoC of the DPU of node ``hostname`` in a lab with the OVN data plane: stop its agent, kill its
    daemons and delete its namespace (:meth:`DataPlane.reboot_dpu`), start them again, then start the agent's
    recorded command again and wait until it serves; the agent puts the node's functions, ports and volumes
    back. The host and its machine run on throughout. Returns the agent's new record."""
    lab_dir = lab_dir.expanduser().resolve()
    with locked(lab_dir):
        state = load_lab(lab_dir)
        if state.dataplane != "ovn":
            raise LabError("a SoC reboot needs a lab with DPU namespaces: `lab up --dataplane ovn`")
        agent = state.process(hostname)
        if agent.role != "agent" or not agent.restartable:
            raise LabError(f"'{hostname}' is not a node's agent that can be restarted; nodes: "
                           f"{', '.join(state.nodes)}")
        _stop(agent, say)
        say(f"Rebooting the SoC of {hostname}: its daemons and namespace {state.namespaces[hostname]['dpu']} "
            "go, then start again")
        node = DataPlane.reboot_dpu(dataplane_dir(state), hostname)  # on failure it stops what it started
        record_dpu(state, hostname, node)
        node.wait_for_bridge()
        since = datetime.now(timezone.utc)
        log_offset = _size(Path(agent.log))
        launch(agent)
        state.save()
    say(f"Started agent {hostname} (pid {agent.pid}); waiting until it serves")
    _wait_serving(state, agent, since, log_offset, say)
    return agent


def _stop(proc: LabProcess, say: Say) -> None:
    """Stop ``proc`` if it runs; LabError if it outlives SIGKILL (no second one may be started then)."""
    if processes.is_alive(proc.pid, proc.started):
        say(f"Stopping {proc.name} (pid {proc.pid})")
        processes.stop(proc.pid, proc.started)
        if processes.is_alive(proc.pid, proc.started):  # even SIGKILL waits for an uninterruptible sleep
            raise LabError(f"{proc.name} (pid {proc.pid}) did not stop; not starting a second one")


def kill(lab_dir: Path, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Send `sig` to the process `name` (its process group); whether it is still alive afterwards.

    Waits until the signal took effect: a stopping signal until the process is stopped, CONT until it
    runs again, any other signal until it ended (at most KILL_WAIT seconds: it may handle the signal)."""
    lab_dir = lab_dir.expanduser().resolve()
    with locked(lab_dir):
        state = load_lab(lab_dir)
        proc = state.process(name)
        if not processes.send_signal(proc.pid, proc.started, sig):
            hint = f"; start it again with: dpustack lab restart {name}" if proc.restartable else ""
            raise LabError(f"{name} (pid {proc.pid}) is not running{hint}")
        if sig in STOPPING or sig == signal.SIGCONT:
            processes.wait_stopped(proc.pid, proc.started, sig in STOPPING, STOP_WAIT)
        if sig in NOT_ENDING:
            return processes.is_alive(proc.pid, proc.started)
        return not processes.wait_gone(proc.pid, proc.started, KILL_WAIT)


def _why_not_restartable(state: LabState, proc: LabProcess) -> str:
    can = ", ".join(p.name for p in state.processes if p.restartable)
    if proc.role in ("ovn", "dpu", "storage"):
        reason = "it is a daemon of the lab's data plane, which detaches itself and has no recorded command line"
    else:
        reason = "its command line was not recorded (a lab started by an older dpustack: `lab down`, then `lab up`)"
    return (f"cannot restart {proc.name}: {reason}. `dpustack lab kill {proc.name}` works on it; "
            f"`lab restart` can restart: {can or 'nothing in this lab'}")


def _wait_serving(state: LabState, proc: LabProcess, since: datetime, log_offset: int, say: Say) -> None:
    if proc.role == "controller":
        _wait(proc, lambda: healthy(state, proc.url), "the controller to answer /healthz", CONTROLLER_TIMEOUT)
    elif proc.role == "agent":
        _wait(proc, lambda: healthy(state, proc.url), f"agent {proc.name} to answer /healthz", NODES_TIMEOUT)
        controller = next((p for p in state.processes if p.role == "controller"), None)
        if controller is None or not processes.is_alive(controller.pid, controller.started):
            say(f"The controller is not running: not waiting for {proc.name} to report up")
            return
        with state.client() as client:
            _wait(proc, lambda: _reported_up_since(client, proc.name, since), f"node {proc.name} to report up",
                  NODES_TIMEOUT)
    elif proc.role == "bmc":
        def answering() -> bool:
            if proc.url.startswith("http"):
                return bmcs.redfish_answers(proc.url)
            return bmcs.ipmi_listening(_read_from(Path(proc.log), log_offset))
        _wait(proc, answering, f"the BMC emulator {proc.name} to answer", bmcs.START_TIMEOUT)


def _reported_up_since(client: Client, hostname: str, since: datetime) -> bool:
    """Whether the controller has the node up with a report received after `since`."""
    try:
        node = next((n for n in client.get("/v1/nodes") if n["hostname"] == hostname), None)
    except DpustackError:  # the controller is busy or restarting: ask again
        return False
    if node is None or node.get("status") != "up":
        return False
    seen = datetime.fromisoformat(node["last_seen"])
    return (seen if seen.tzinfo else seen.replace(tzinfo=timezone.utc)) >= since


def _wait(proc: LabProcess, ready: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll `ready`; fail with the end of the process's log if it exits, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not processes.is_alive(proc.pid, proc.started):
            raise LabError(f"{proc.name} (pid {proc.pid}) exited after its restart, while waiting for {what}; "
                           f"end of {proc.log}:\n{_tail(Path(proc.log))}")
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what} (pid {proc.pid}); "
                           f"end of {proc.log}:\n{_tail(Path(proc.log))}")
        time.sleep(0.2)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
