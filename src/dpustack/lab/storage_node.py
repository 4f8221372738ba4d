"""The lab's storage network: one storage node on the underlay, one qemu-storage-daemon per DPU.

* :class:`StorageNode` — a namespace ``<prefix>-st`` wired into the underlay
  bridge like a DPU (its ``ul0`` holds :data:`STORAGE_IP`), running the
  storage node's ``qemu-storage-daemon``. The controller's ``qcow2`` volume
  backend drives it over its QMP socket (a file, reachable from the root
  namespace) and has it serve each attached volume as an NBD export on
  ``STORAGE_IP:NBD_PORT``, so volume traffic crosses the underlay.
* :func:`daemon_argv` — the command line of a daemonized
  ``qemu-storage-daemon`` with a QMP socket and a pidfile in its directory;
  each DPU runs one in its namespace, which its agent's ``qsd`` storage
  driver drives, and whose vhost-user-blk sockets are the storage functions'.
"""

from __future__ import annotations

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
    """The storage node: namespace, underlay address and its qemu-storage-daemon, all under ``dir``."""

    def __init__(self, dir: Path, namespace: str):
        self.dir = Path(dir)
        self.netns = namespace
        self.qmp = self.dir / QMP_SOCKET
        self.nbd = f"{STORAGE_IP}:{NBD_PORT}"

    def start(self, wire: Callable[[str], None]) -> "StorageNode":
        """Create the namespace, ``wire`` it into the underlay (its end there is ``ul0``), give it
        the storage address and start the daemon."""
        self.stop()
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            netns.create(self.netns)
            wire(self.netns)
            netns.run(self.netns, ["ip", "addr", "replace", f"{STORAGE_IP}/24", "dev", "ul0"])
            netns.run(self.netns, ["ip", "link", "set", "lo", "up"])
            done = netns.run(self.netns, daemon_argv(self.dir), check=False)
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
        netns.delete(self.netns)
