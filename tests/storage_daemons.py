"""qemu-storage-daemon processes for integration tests: a storage node and a DPU's daemon.

* :class:`StorageNode` serves qcow2 volumes (made with ``qemu-img``) as
  writable NBD exports named after them, on an address of its namespace.
* :class:`DpuDaemon` is the daemon the ``qsd`` driver drives: only a QMP
  monitor, on a unix socket.

Each daemon is started in a network namespace (``ip netns exec`` execs the
daemon, so the child's PID is the daemon's), counts as started once it wrote
its ``--pidfile`` (it does after start-up), and is killed by that PID.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from qemu.qmp.legacy import QEMUMonitorProtocol

from netns import namespaces

QSD = "/usr/bin/qemu-storage-daemon"
NBD_PORT = 10809
START_TIMEOUT = 5.0


class Daemon:
    """One qemu-storage-daemon, started in ``netns`` with ``args``."""

    def __init__(self, netns: str, workdir: Path, name: str, args: list[str]):
        self.netns = netns
        self.pidfile = workdir / f"{name}.pid"
        self.log = workdir / f"{name}.log"
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Daemon":
        self.pidfile.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(["ip", "netns", "exec", self.netns, QSD, *self.args,
                                             "--pidfile", str(self.pidfile)], stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.pidfile.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"qemu-storage-daemon did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.005)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None


class StorageNode:
    """The storage node: qcow2 volumes in ``workdir``, each an NBD export at ``address``."""

    def __init__(self, netns: str, address: str, workdir: Path, volumes: dict[str, int], *, qmp: bool = False):
        self.netns = netns
        self.address = address
        self.workdir = workdir
        self._nodes = {name: f"vol{n}" for n, name in enumerate(volumes)}
        self.qmp_socket = workdir / "storage-qmp.sock"
        args = ["--nbd-server", f"addr.type=inet,addr.host={address},addr.port={NBD_PORT}"]
        if qmp:
            args += ["--chardev", f"socket,id=qmp,path={self.qmp_socket},server=on,wait=off", "--monitor", "chardev=qmp"]
        for n, (name, size) in enumerate(volumes.items()):
            image = workdir / f"{name}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)], check=True)
            args += ["--blockdev", f"driver=file,node-name=file{n},filename={image}",
                     "--blockdev", f"driver=qcow2,node-name=vol{n},file=file{n}",
                     "--export", f"type=nbd,id=export{n},node-name=vol{n},name={name},writable=on"]
        self.daemon = Daemon(netns, workdir, "storage-node", args)

    def uri(self, volume: str) -> str:
        return f"nbd://{self.address}:{NBD_PORT}/{volume}"

    def node_of(self, volume: str) -> str:
        """The block node the volume's export serves."""
        return self._nodes[volume]

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """One command on the storage node's monitor (started with ``qmp=True``)."""
        with QEMUMonitorProtocol(str(self.qmp_socket)) as monitor:
            monitor.connect()
            return monitor.cmd(command, **(arguments or {}))

    def write(self, volume: str, pattern: int, offset: int, length: int) -> None:
        """Write ``pattern`` bytes into the volume through its export on the storage node."""
        subprocess.run(["ip", "netns", "exec", self.netns, "qemu-io", "-f", "raw", "-c",
                        f"write -P {pattern:#x} {offset} {length}", self.uri(volume)], capture_output=True, check=True)

    def holds(self, volume: str, pattern: int, offset: int, length: int) -> bool:
        """Whether the volume, read through its export on the storage node, has ``pattern`` there."""
        done = subprocess.run(["ip", "netns", "exec", self.netns, "qemu-io", "-r", "-f", "raw", "-c",
                               f"read -P {pattern:#x} {offset} {length}", self.uri(volume)],
                              capture_output=True, check=False)
        return done.returncode == 0


class DpuDaemon(Daemon):
    """The DPU's qemu-storage-daemon: a QMP monitor for the driver at ``qmp_socket``, one for the test.

    A QMP monitor serves one client at a time: the test's own commands need a
    monitor the driver's connection does not hold.
    """

    def __init__(self, netns: str, workdir: Path):
        self.qmp_socket = workdir / "qmp.sock"
        self.test_socket = workdir / "test-qmp.sock"
        super().__init__(netns, workdir, "dpu", [
            "--chardev", f"socket,id=qmp,path={self.qmp_socket},server=on,wait=off", "--monitor", "chardev=qmp",
            "--chardev", f"socket,id=test,path={self.test_socket},server=on,wait=off", "--monitor", "chardev=test"])

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """One command on the test's monitor."""
        with QEMUMonitorProtocol(str(self.test_socket)) as monitor:
            monitor.connect()
            return monitor.cmd(command, **(arguments or {}))


@contextmanager
def storage_network() -> Iterator[tuple[str, str, str]]:
    """A storage-node namespace and a DPU namespace joined by a veth pair:
    ``(storage netns, DPU netns, the storage node's address)``; deleted on the way out.

    The DPU's route to the storage node acknowledges at once (``quickack``): QEMU 7.2's NBD server
    writes its negotiation replies in small pieces without TCP_NODELAY, and with delayed ACKs each
    NBD connect (each attach) waits about 80 ms for them (docs/storage.md).
    """
    with namespaces("stor", "dpu") as names:
        storage, dpu = names["stor"], names["dpu"]
        subprocess.run(["ip", "link", "add", "stor0", "netns", storage, "type", "veth",
                        "peer", "name", "dpu0", "netns", dpu], check=True)
        for netns, ifname, address in ((storage, "stor0", "192.168.251.1/30"), (dpu, "dpu0", "192.168.251.2/30")):
            for argv in (["addr", "add", address, "dev", ifname], ["link", "set", ifname, "up"],
                         ["link", "set", "lo", "up"]):
                subprocess.run(["ip", "-n", netns, *argv], check=True)
        subprocess.run(["ip", "-n", dpu, "route", "replace", "192.168.251.0/30", "dev", "dpu0", "quickack", "1"],
                       check=True)
        yield storage, dpu, "192.168.251.1"


def disk_size(path: Path) -> int:
    """The capacity the vhost-user-blk device at ``path`` announces (VHOST_USER_GET_CONFIG, virtio-blk
    ``capacity`` in 512-byte sectors), asked the way a vhost-user front end asks."""
    get_config, version, offset, size = 24, 0x1, 0, 8
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(2)
        client.connect(str(path))
        client.sendall(struct.pack("<IIIIII", get_config, version, 12 + size, offset, size, 0) + bytes(size))
        reply = b""
        while len(reply) < 12 + 12 + size:
            chunk = client.recv(64)
            assert chunk, "the daemon hung up"
            reply += chunk
    (sectors,) = struct.unpack_from("<Q", reply, 24)
    return sectors * 512
