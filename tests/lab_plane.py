"""A throwaway lab data plane (OVN central + underlay) for one test, checked for leftovers afterwards,
and the polling helper the data plane tests share."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from dpustack.lab.dataplane import DataPlane
from dpustack.linux import netns

T = TypeVar("T")


@contextmanager
def running_plane(tag: str) -> Iterator[DataPlane]:
    """Start a DataPlane under /tmp (short: unix socket paths) whose namespaces start with ``tag`` + a
    random suffix; stop it, and fail if a namespace or a process naming its directory is left."""
    directory = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
    prefix = f"{tag}{uuid.uuid4().hex[:6]}"
    plane = DataPlane(directory, prefix=prefix)
    try:
        yield plane.start()
    finally:
        try:
            plane.stop()
        finally:
            leftover_ns = [n for n in netns.names() if n.startswith(prefix)]
            leftover_pids = subprocess.run(["pgrep", "-f", str(directory)], capture_output=True,
                                           text=True).stdout.split()
            shutil.rmtree(directory, ignore_errors=True)
            assert not leftover_ns, f"namespaces left behind: {leftover_ns}"
            assert not leftover_pids, f"processes left behind: {leftover_pids}"


def wait_for(what: str, check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something true, and return that; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return value
