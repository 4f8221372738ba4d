"""Run a command in a lab host over its second serial port: the host side of the host image's agent.

    status, output = run("/run/lab/web1-agent.sock", ["cat", "/etc/hostname"], timeout=10)

QEMU serves the guest's ttyS1 on a unix socket (``-chardev socket,...,server=on``,
libvirt ``<serial type='unix'><source mode='bind'>``); the guest's agent
(``dpustack/lab/host_init/agent``) reads one request a line and writes one
reply a line, base64 inside so that any bytes pass::

    P <id> .                          ->  A <id> 0 - .
    Q <id> <seconds> <base64 sh> .    ->  A <id> <exit status> <base64 stdout+stderr> .

Every call uses new random ids and looks only at replies carrying them, so
bytes left over from earlier sessions (the end of a reply nobody read) are
passed over; each request starts on a fresh line, so the rest of a request
an earlier client broke off is a line the agent ignores. Before the command
the agent is pinged until it answers (the guest may still be booting), for
``ready_timeout`` seconds at most. A QEMU chardev serves one client at a
time, so callers take turns: each holds an exclusive lock on
``<socket>.lock`` (flock) while it talks to the agent.
"""

from __future__ import annotations

import base64
import fcntl
import math
import os
import secrets
import shlex
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dpustack.lab.state import LabError

PING_INTERVAL = 0.5
#: beyond the command's own timeout (the agent kills it then): moving its output over the serial line
TRANSFER_GRACE = 10.0


def run(socket_path: Path | str, command: str | Sequence[str], timeout: float = 30.0, *,
        ready_timeout: float = 60.0) -> tuple[int, bytes]:
    """Run ``command`` (a shell command line, or an argv quoted for sh) in the guest; ``(exit status, its
    stdout and stderr together)``. The guest kills it after ``timeout`` s (status 137). LabError if the
    socket or the agent does not answer within ``ready_timeout`` s or the reply does not come."""
    script = command if isinstance(command, str) else shlex.join(command)
    with _turn(Path(socket_path)):
        return _run(Path(socket_path), script, timeout, ready_timeout)


def _run(socket_path: Path, script: str, timeout: float, ready_timeout: float) -> tuple[int, bytes]:
    ready_by = time.monotonic() + ready_timeout
    with _connect(socket_path, ready_by, ready_timeout) as channel:
        try:
            lines = _Lines(channel)
            if not _ping(channel, lines, ready_by):
                raise LabError(f"the guest agent on {socket_path} did not answer within {ready_timeout:g} s "
                               f"(the guest's init is not up yet, or another client holds the socket)",
                               field="guest_agent")
            reply = _request(channel, lines, script, timeout)
        except OSError as exc:
            raise LabError(f"the guest agent's serial socket {socket_path} failed: {exc.strerror or exc}",
                           field="guest_agent") from exc
    if reply is None:
        raise LabError(f"the guest agent on {socket_path} sent no reply to `{script}` within "
                       f"{timeout + TRANSFER_GRACE:g} s", field="guest_agent")
    return reply


@contextmanager
def _turn(socket_path: Path) -> Iterator[None]:
    """Hold the lock on ``<socket>.lock`` (made when missing) until the block ends."""
    try:
        fd = os.open(f"{socket_path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LabError(f"cannot open the guest agent's lock {socket_path}.lock: {exc.strerror}",
                       field="guest_agent") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ping(channel: socket.socket, lines: "_Lines", deadline: float) -> bool:
    """Ping every PING_INTERVAL s until the agent answers one of these pings; False if not by ``deadline``."""
    pings: set[str] = set()
    while time.monotonic() < deadline:
        ping = secrets.token_hex(8)
        pings.add(ping)
        channel.sendall(f"\nP {ping} .\n".encode())
        next_ping = min(deadline, time.monotonic() + PING_INTERVAL)
        while (line := lines.next(next_ping)) is not None:
            if _reply(line, pings) is not None:
                return True
    return False


def _request(channel: socket.socket, lines: "_Lines", script: str, timeout: float) -> tuple[int, bytes] | None:
    """Send ``script`` and wait for its reply; None if it does not come in time."""
    request_id = secrets.token_hex(8)
    payload = base64.b64encode(script.encode()).decode() or "-"
    channel.sendall(f"\nQ {request_id} {max(1, math.ceil(timeout))} {payload} .\n".encode())
    deadline = time.monotonic() + timeout + TRANSFER_GRACE
    while (line := lines.next(deadline)) is not None:
        reply = _reply(line, {request_id})
        if reply is not None:
            return reply
    return None


def _connect(path: Path, deadline: float, ready_timeout: float) -> socket.socket:
    """A connection to the serial port's socket; QEMU may not have made it yet."""
    while True:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            channel.connect(str(path))
            return channel
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            channel.close()
            if time.monotonic() >= deadline:
                raise LabError(f"cannot connect to the guest agent's serial socket {path} within "
                               f"{ready_timeout:g} s: {exc.strerror}", field="guest_agent") from exc
            time.sleep(0.1)
        except OSError as exc:
            channel.close()
            raise LabError(f"cannot connect to the guest agent's serial socket {path}: {exc.strerror or exc}",
                           field="guest_agent") from exc


def _reply(line: bytes, ids: set[str]) -> tuple[int, bytes] | None:
    """``(status, output)`` of a whole reply to one of ``ids``; None for any other line."""
    fields = line.decode("ascii", errors="replace").split(" ")
    if len(fields) != 5 or fields[0] != "A" or fields[1] not in ids or fields[4] != "." \
            or not fields[2].isdigit():
        return None
    try:
        output = b"" if fields[3] == "-" else base64.b64decode(fields[3], validate=True)
    except ValueError:
        return None
    return int(fields[2]), output


class _Lines:
    """Lines read from a socket, with a deadline per line."""

    def __init__(self, channel: socket.socket):
        self.channel = channel
        self.buffer = b""

    def next(self, deadline: float) -> bytes | None:
        """The next line (without its line end), None if none is whole by ``deadline``."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.channel.settimeout(left)
            try:
                chunk = self.channel.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise LabError("the guest agent's serial socket was closed (QEMU stopped?)", field="guest_agent")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")
