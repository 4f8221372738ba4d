"""The child subreaper libvirtd runs under: exit status, signals passed on, orphans reaped at once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from dpustack.lab import processes

REAPER = processes.python_entry_point("dpustack.lab.reaper")


def test_the_commands_exit_status_is_the_reapers():
    assert subprocess.run([*REAPER, "sh", "-c", "exit 3"], timeout=10).returncode == 3
    assert subprocess.run([*REAPER, "/no/such/program"], capture_output=True, timeout=10).returncode == 127
    assert subprocess.run(REAPER, capture_output=True, timeout=10).returncode == 2


def test_sigterm_is_passed_on_to_the_command():
    reaper = subprocess.Popen([*REAPER, "sleep", "30"])
    time.sleep(0.5)
    reaper.send_signal(signal.SIGTERM)
    assert reaper.wait(5) == 128 + signal.SIGTERM


def test_an_orphan_becomes_the_reapers_child_and_is_reaped_when_it_exits(tmp_path: Path):
    pidfile = tmp_path / "orphan.pid"
    # the subshell starts `sleep` and exits at once, orphaning it while the command sleeps on
    reaper = subprocess.Popen([*REAPER, "sh", "-c", f"(sleep 2 & echo $! > {pidfile}); sleep 10"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        orphan = int(pidfile.read_text())
        while _parent(orphan) != reaper.pid:  # once the subshell that started it has exited
            assert time.monotonic() < deadline, f"the orphan's parent is {_parent(orphan)}, not the reaper"
            time.sleep(0.01)
        deadline = time.monotonic() + 6
        while processes.run_state(orphan) is not None:  # exited after 2 s: reaped, not a zombie for PID 1
            assert time.monotonic() < deadline, f"the orphan is {processes.run_state(orphan)} after it exited"
            time.sleep(0.05)
        assert reaper.poll() is None  # still waiting for its command
    finally:
        os.killpg(reaper.pid, signal.SIGKILL)  # the reaper and its command
        reaper.wait(5)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
