"""Logging in on a host's serial console through a :class:`dpustack.drivers.bmc.SerialConsole`, as a user at
the console would: Enter until the login prompt, then user, password, one command (:meth:`ConsoleReader.login`),
or a root shell kept for several commands (:meth:`ConsoleReader.shell`, :meth:`~ConsoleReader.run`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dpustack.drivers.bmc import SerialConsole

TIMEOUT = 30.0


class ConsoleReader:
    """An attached serial console and everything it printed."""

    def __init__(self, console: SerialConsole):
        self.console = console
        self.seen = bytearray()
        self._changed = threading.Condition()
        console.attach(self._received)

    def _received(self, data: bytes) -> None:
        with self._changed:
            self.seen += data
            self._changed.notify_all()

    def answer(self, prompt: bytes, reply: bytes, *, repeat: bool = False, timeout: float = TIMEOUT) -> float:
        """Type ``reply`` (again every 2 s with ``repeat``) until the console prints ``prompt`` after it; the
        seconds that took."""
        started = time.monotonic()
        start = len(self.seen)
        self.console.write(reply)
        while True:
            with self._changed:
                if self._changed.wait_for(lambda: prompt in self.seen[start:], timeout=2.0):
                    return time.monotonic() - started
            assert time.monotonic() - started < timeout, \
                f"no {prompt!r} on the console within {timeout:g} s; it printed: {bytes(self.seen[-600:])!r}"
            if repeat:
                self.console.write(reply)

    def login(self, hostname: str, password: str) -> float:
        """Log in as root and run one command; the seconds from the first Enter to the login prompt."""
        to_prompt = self.answer(f"{hostname} login: ".encode(), b"\r", repeat=True)
        self.answer(b"Password: ", b"root\r")
        self.answer(f"{hostname}:~# ".encode(), password.encode() + b"\r")
        self.answer(b"CONSOLE-42 root", b"echo CONSOLE-$((6 * 7)) $(id -un)\r")
        self.answer(f"{hostname} login: ".encode(), b"exit\r")
        return to_prompt

    def wait(self, until: Callable[[bytes], bool], since: int = 0, timeout: float = TIMEOUT) -> bytes:
        """Wait until what the console printed from ``since`` on satisfies ``until``; that output."""
        with self._changed:
            if not self._changed.wait_for(lambda: until(bytes(self.seen[since:])), timeout=timeout):
                raise AssertionError(f"not on the console within {timeout:g} s; it printed: "
                                     f"{bytes(self.seen[-600:])!r}")
            return bytes(self.seen[since:])

    def shell(self, hostname: str, password: str) -> None:
        """Log in as root and stay at the shell's prompt."""
        self.answer(f"{hostname} login: ".encode(), b"\r", repeat=True)
        self.answer(b"Password: ", b"root\r")
        self.answer(f"{hostname}:~# ".encode(), password.encode() + b"\r")

    def run(self, command: str) -> bytes:
        """Run ``command`` in the shell (``&`` at its end: in the background); what the console printed from
        the command's echo until the shell was done."""
        since = len(self.seen)
        then = " " if command.endswith("&") else "; "
        self.answer(b"DONE-42", f"{command}{then}echo DONE-$((40 + 2))\r".encode())
        return bytes(self.seen[since:])

    def detach(self) -> None:
        self.console.detach()
