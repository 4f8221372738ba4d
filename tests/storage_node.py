"""A storage node for tests: one real `qemu-storage-daemon` with a QMP socket and a pidfile, and the NBD
client side (`qemu-io`) a DPU would be.

``StorageDaemon(directory).start()`` runs the daemon (QMP on ``directory/qmp.sock``), ``kill()`` is a
crash (SIGKILL), ``start()`` again is its restart on the same socket, ``stop()`` ends it; every signal
goes to the PID it was started with. The daemon's NBD server is not started here: the controller's
backend starts it on the address it is configured with. ``qemu_io(uri, *commands)`` runs qemu-io
commands against an NBD URI and fails the test if one fails (a `read -P` that finds other bytes
fails); ``NbdClient`` keeps one connection open across commands, as a DPU writing to the volume does.

Import into a test module: ``from storage_node import StorageDaemon, qemu_io, NbdClient``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

QSD = "qemu-storage-daemon"
QEMU_IO = "qemu-io"
PROMPT = b"qemu-io> "


def short_directory() -> Path:
    """A new directory with a short path: unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="dpq-", dir="/tmp"))


class StorageDaemon:
    """One qemu-storage-daemon whose QMP monitor listens on `directory/qmp.sock`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.qmp_socket = directory / "qmp.sock"
        self.pidfile = directory / "qsd.pid"
        self.log = directory / "qsd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert shutil.which(QSD), f"{QSD} is missing (Debian package qemu-system-common)"
        self.qmp_socket.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [QSD, "--chardev", f"socket,id=qmp,path={self.qmp_socket},server=on,wait=off",
                 "--monitor", "chardev=qmp", "--pidfile", str(self.pidfile)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while not (self._answers() and self._recorded() == self.process.pid):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{QSD} did not start: {self.log.read_text()}")
            time.sleep(0.01)

    def _recorded(self) -> int | None:
        """The PID in the pidfile (one killed with SIGKILL leaves its own behind)."""
        try:
            return int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.qmp_socket))
            except OSError:
                return False
            return True

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """A crash: SIGKILL, then reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def qemu_io(uri: str, *commands: str, fmt: str = "raw") -> str:
    """Run qemu-io `commands` on `uri`; their output. Any failed command fails the test."""
    argv = [QEMU_IO, "-f", fmt, uri]
    for command in commands:
        argv += ["-c", command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "failed" not in done.stdout + done.stderr, (argv, done.stdout, done.stderr)
    return done.stdout


class NbdClient:
    """One qemu-io process connected to an NBD export, driven command by command."""

    def __init__(self, uri: str) -> None:
        self.process = subprocess.Popen([QEMU_IO, "-f", "raw", uri], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._answer()

    def _answer(self) -> str:
        assert self.process.stdout is not None
        received = b""
        while not received.endswith(PROMPT):
            chunk = os.read(self.process.stdout.fileno(), 4096)
            assert chunk, f"qemu-io ended: {received.decode()}"
            received += chunk
        return received.removesuffix(PROMPT).decode()

    def run(self, command: str) -> str:
        """One command; its output, which must not report a failure."""
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        answer = self._answer()
        assert "failed" not in answer and "error" not in answer.lower(), (command, answer)
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write(b"quit\n")
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> "NbdClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
