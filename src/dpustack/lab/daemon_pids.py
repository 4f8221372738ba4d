"""Daemons the lab detaches (pidfiles): is a PID still theirs, and killing it safely."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dpustack.lab.state import LabError


def alive(pid: int) -> bool:
    """Running, not merely a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def mentions(pid: int, text: str) -> bool:
    """The process runs a command line containing ``text`` (so a recycled PID is never killed)."""
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_pid(pid: int, owner: str, *, wait: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the process ``pid`` if it is alive and its command line names ``owner``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not (alive(pid) and mentions(pid, owner)):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.02)
    if alive(pid):
        raise LabError(f"process {pid} ({owner}) did not stop")
