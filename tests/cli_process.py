"""Helpers for tests that run the real `dpustack` command and check what it leaves running."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from dpustack.lab import processes
from dpustack.lab.state import LabState

DPUSTACK = str(Path(sys.executable).with_name("dpustack"))


def run(*args: str, env: dict[str, str] | None = None, ok: bool = True, timeout: float = 180,
        input: str = "") -> subprocess.CompletedProcess[str]:
    """Run `dpustack ARGS` with `input` on its stdin; unless ok=False, fail the test (showing both streams) on a
    non-zero exit."""
    result = subprocess.run([DPUSTACK, *args], env={**os.environ, **(env or {})}, capture_output=True,
                            text=True, timeout=timeout, input=input)
    if ok:
        assert result.returncode == 0, f"dpustack {' '.join(args)} -> {result.returncode}\n" \
                                       f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def take_down(lab_dir: Path) -> None:
    """`dpustack lab down --dir DIR`, then stop any process of the lab that outlived it (a fixture's teardown)."""
    state = LabState.load(lab_dir)
    recorded = [(p.pid, p.started) for p in state.processes] if state else []
    run("lab", "down", "--dir", str(lab_dir), ok=False)
    for pid, started in recorded:
        processes.stop(pid, started, timeout=2)


def lab_env(lab_dir: Path) -> dict[str, str]:
    """What `eval "$(dpustack lab env --dir DIR)"` exports (URL, admin token, the lab CA), as a real shell sees it."""
    script = f'eval "$({shlex.quote(DPUSTACK)} lab env --dir {shlex.quote(str(lab_dir))})" && ' \
             'printf "%s\\n%s\\n%s\\n" "$DPUSTACK_URL" "$DPUSTACK_TOKEN" "$DPUSTACK_CACERT"'
    url, token, ca = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                    check=True).stdout.splitlines()
    return {"DPUSTACK_URL": url, "DPUSTACK_TOKEN": token, "DPUSTACK_CACERT": ca}


def as_json(*args: str, env: dict[str, str]) -> object:
    return json.loads(run(*args, "-f", "json", env=env).stdout)


def processes_naming(directory: Path) -> set[int]:
    """Pids of processes whose command line or environment names `directory` (a lab's daemons)."""
    marker = str(directory).encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes() or marker in (proc / "environ").read_bytes():
                found.add(int(proc.name))
        except OSError:
            continue
    return found
