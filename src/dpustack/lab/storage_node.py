"""The lab's storage network: one storage node on the underlay, one qemu-storage-daemon per DPU.

* :class:`StorageNode` — the storage node's ``qemu-storage-daemon``. With the
  OVN data plane it runs in a namespace ``<prefix>-st`` wired into the
  underlay bridge like a DPU (its ``ul0`` holds :data:`STORAGE_IP`), so volume
  traffic crosses the underlay; in the memory lab it runs beside the
  controller and serves on loopback. The controller's ``qcow2`` volume
  backend drives it over its QMP socket (a file, reachable from the root
  namespace) and has it serve each attached volume as an NBD export.
* :func:`daemon_argv` — the command line of a daemonized
  ``qemu-storage-daemon`` with a QMP socket and a pidfile in its directory;
  each DPU runs one in its namespace, which its agent's ``qsd`` storage
  driver drives, and whose vhost-user-blk sockets are the storage functions'.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

from dpustack.lab.daemon_pids import kill_pid
from dpustack.lab.state import LabError
from dpustack.linux import netns

STORAGE_IP = "192.168.100.254"
NBD_PORT = 10809
QMP_SOCKET = "qsd.sock"
DAEMON = "qemu-storage-daemon"  # also the name of its pidfile and log in the directory


def daemon_argv(directory: Path) -> list[str]:
    """A ``qemu-storage-daemon`` that detaches once its QMP socket ``directory/qsd.sock`` listens."""
    return [DAEMON, "--chardev", f"socket,id=qmp,path={directory / QMP_SOCKET},server=on,wait=off",
            "--monitor", "chardev=qmp", "--pidfile", str(directory / f"{DAEMON}.pid"), "--daemonize"]


def vhost_dir(directory: Path) -> Path:
    """Where a DPU's storage functions' vhost-user-blk sockets live."""
    return directory / "vhost"


class StorageNode:
    """The storage node's qemu-storage-daemon, under ``dir``: in ``namespace`` (on the underlay, at
    :data:`STORAGE_IP`) or, without one, beside the controller on loopback port ``port``."""

    def __init__(self, dir: Path, namespace: str | None, *, port: int = NBD_PORT):
        self.dir = Path(dir)
        self.netns = namespace
        self.qmp = self.dir / QMP_SOCKET
        self.nbd = f"{STORAGE_IP if namespace else '127.0.0.1'}:{port}"

    def start(self, wire: Callable[[str], None] | None = None) -> "StorageNode":
        """Start the daemon; with a namespace, first create it, ``wire`` it into the underlay (its end
        there is ``ul0``) and give it the storage address."""
        self.stop()
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            argv = daemon_argv(self.dir)
            if self.netns is not None:
                netns.create(self.netns)
                if wire is not None:
                    wire(self.netns)
                netns.run(self.netns, ["ip", "addr", "replace", f"{STORAGE_IP}/24", "dev", "ul0"])
                argv = ["ip", "netns", "exec", self.netns, *argv]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0:
                raise LabError(f"the storage node's {DAEMON} did not start: {(done.stderr or '').strip()}")
        except BaseException:
            self.stop()
            raise
        return self

    def pid(self) -> int | None:
        try:
            return int((self.dir / f"{DAEMON}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Kill the daemon by PID (if its command line names this directory) and delete the namespace."""
        pid = self.pid()
        if pid is not None:
            kill_pid(pid, str(self.dir))
            (self.dir / f"{DAEMON}.pid").unlink(missing_ok=True)
        self.qmp.unlink(missing_ok=True)
        if self.netns is not None:
            netns.delete(self.netns)
