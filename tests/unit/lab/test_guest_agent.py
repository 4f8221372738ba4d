"""The guest agent's protocol end to end on the build machine: the host image's agent script (busybox sh) on a
pty, served on a unix socket the way QEMU serves a serial port, and guest_agent.run on the other end."""

from __future__ import annotations

import base64
import os
import signal
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from dpustack.lab import guest_agent, host_init
from dpustack.lab.guest_initramfs import BUSYBOX
from dpustack.lab.state import LabError


class SerialSocket:
    """A pty's master on a unix socket, one client at a time, as QEMU's ``-chardev socket,server=on`` does:
    what the guest writes while no client is connected is dropped."""

    def __init__(self, path: Path):
        self.master, slave = os.openpty()
        self.tty = os.ttyname(slave)
        os.close(slave)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client: socket.socket | None = None
        while not self.stopped:
            readable, _, _ = select.select([self.master, client or self.listener], [], [], 0.05)
            if self.master in readable:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # no slave open (yet, or any more)
                    time.sleep(0.05)
                    continue
                if client is not None:
                    client.sendall(data)
            if client is None and self.listener in readable:
                client, _ = self.listener.accept()
            elif client is not None and client in readable:
                data = client.recv(4096)
                if data:
                    os.write(self.master, data)
                else:
                    client.close()
                    client = None
        if client is not None:
            client.close()

    def close(self) -> None:
        self.stopped = True
        self.thread.join(5)
        self.listener.close()
        os.close(self.master)


@pytest.fixture
def serial(tmp_path: Path) -> Iterator[SerialSocket]:
    port = SerialSocket(tmp_path / "agent.sock")
    yield port
    port.close()


@pytest.fixture
def start_agent(serial: SerialSocket, tmp_path: Path) -> Iterator:
    """Start the agent script on the pty (once): what it would run as on ttyS1."""
    agents: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        script = resources.files(host_init) / "agent"
        agents.append(subprocess.Popen([str(BUSYBOX), "sh", str(script)], stdin=subprocess.DEVNULL,
                                       env={"DPUSTACK_AGENT_TTY": serial.tty, "DPUSTACK_RUN": str(tmp_path / "run"),
                                            "DPUSTACK_CONSOLE": str(tmp_path / "console")},
                                       start_new_session=True))

    yield start
    for agent in agents:  # and what it runs: its own process group
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait(5)


def test_commands_run_with_their_status_and_any_bytes_of_output(start_agent, tmp_path):
    start_agent()
    socket_path = tmp_path / "agent.sock"
    assert guest_agent.run(socket_path, "echo hello", 10, ready_timeout=10) == (0, b"hello\n")
    assert guest_agent.run(socket_path, ["sh", "-c", "echo out; echo err >&2; exit 3"], 10) == (3, b"out\nerr\n")
    every_byte = bytes(range(256)) * 64
    (tmp_path / "bytes").write_bytes(every_byte)
    assert guest_agent.run(socket_path, ["cat", str(tmp_path / "bytes")], 10) == (0, every_byte)
    quoted = "it's \"quoted\" $HOME `x` \\ \u00e9"
    assert guest_agent.run(socket_path, ["printf", "%s", quoted], 10) == (0, quoted.encode())
    assert guest_agent.run(socket_path, "true", 10) == (0, b"")


def test_a_command_is_killed_after_its_timeout(start_agent, tmp_path):
    start_agent()
    started = time.monotonic()
    status, _ = guest_agent.run(tmp_path / "agent.sock", "sleep 30", 1, ready_timeout=10)
    assert status == 137 and time.monotonic() - started < 10


def test_what_earlier_clients_left_is_passed_over(start_agent, tmp_path):
    start_agent()
    socket_path = tmp_path / "agent.sock"
    assert guest_agent.run(socket_path, "echo first", 10, ready_timeout=10) == (0, b"first\n")
    with socket.socket(socket.AF_UNIX) as earlier:  # half a request, then gone
        earlier.connect(str(socket_path))
        earlier.sendall(b"Q 1234 10 " + base64.b64encode(f"touch {tmp_path}/half".encode()))
        time.sleep(0.2)
    assert guest_agent.run(socket_path, "echo second", 10) == (0, b"second\n")
    assert not (tmp_path / "half").exists()
    with socket.socket(socket.AF_UNIX) as earlier:  # a whole request whose reply nobody reads
        earlier.connect(str(socket_path))
        earlier.sendall(b"\nQ 5678 10 " + base64.b64encode(b"sleep 0.5; echo late") + b" .\n")
        time.sleep(0.1)
    assert guest_agent.run(socket_path, "echo third", 10) == (0, b"third\n")


def test_an_agent_that_starts_late_is_waited_for(start_agent, tmp_path):
    threading.Timer(1.0, start_agent).start()
    assert guest_agent.run(tmp_path / "agent.sock", "echo late", 10, ready_timeout=15) == (0, b"late\n")


def test_no_agent_or_no_socket_is_a_clear_error_in_bounded_time(serial, tmp_path):
    started = time.monotonic()
    with pytest.raises(LabError, match=r"did not answer within 1 s \(the guest's init is not up yet"):
        guest_agent.run(tmp_path / "agent.sock", "true", 10, ready_timeout=1)
    with pytest.raises(LabError, match=r"cannot connect to the guest agent's serial socket .*/nothing.sock "
                                       r"within 0.5 s"):
        guest_agent.run(tmp_path / "nothing.sock", "true", 10, ready_timeout=0.5)
    assert time.monotonic() - started < 5
