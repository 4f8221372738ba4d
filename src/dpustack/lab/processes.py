"""Supervision of the lab's detached processes, by PID (Linux: reads /proc).

A process is remembered as (pid, start time); the start time guards against
signalling an unrelated process that reused the PID after a crash or reboot.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def python_entry_point(module: str, function: str = "main") -> list[str]:
    """argv that runs `module.function()` with this interpreter; append the program's own arguments."""
    return [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


def spawn(argv: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start a detached process (own session and process group) logging to `log`; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    return process.pid


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def is_alive(pid: int, started: int | None) -> bool:
    """Whether the process recorded as (pid, started) still runs (zombies count as gone)."""
    _reap(pid)
    if started is None or start_time(pid) != started:
        return False
    return run_state(pid) not in (None, "Z")


def is_stopped(pid: int, started: int | None) -> bool:
    """Whether the process recorded as (pid, started) is alive but stopped (SIGSTOP and the like)."""
    return is_alive(pid, started) and run_state(pid) in ("T", "t")


def run_state(pid: int) -> str | None:
    """The kernel's one-letter state of `pid` (R, S, D, T, Z…), None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def stop(pid: int, started: int | None, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if it outlives `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_alive(pid, started):
            return
        _signal(pid, sig)
        if sig == signal.SIGTERM:
            _signal(pid, signal.SIGCONT)  # a process stopped by `lab kill --signal STOP` handles TERM only once resumed
        wait_gone(pid, started, timeout)


def send_signal(pid: int, started: int | None, sig: signal.Signals) -> bool:
    """Send `sig` to the process group led by the process recorded as (pid, started); False if it is gone."""
    if not is_alive(pid, started):
        return False
    _signal(pid, sig)
    return True


def wait_gone(pid: int, started: int | None, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process to end; whether it has."""
    return _wait_for(lambda: not is_alive(pid, started), timeout)


def wait_stopped(pid: int, started: int | None, stopped: bool, timeout: float) -> bool:
    """Wait up to `timeout` seconds until the process is stopped (or, `stopped` False, no longer is)."""
    return _wait_for(lambda: is_stopped(pid, started) == stopped, timeout)


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def parse_signal(name: str) -> signal.Signals:
    """The signal called `name`: KILL, SIGKILL and kill are all SIGKILL; ValueError for no such name."""
    wanted = name.strip().upper()
    wanted = wanted if wanted.startswith("SIG") else "SIG" + wanted
    try:
        return signal.Signals[wanted]
    except KeyError:
        raise ValueError(f"no signal called '{name}': use a name such as KILL, TERM, STOP, CONT, INT or HUP") from None


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:  # not a group leader after all: signal the process alone
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
