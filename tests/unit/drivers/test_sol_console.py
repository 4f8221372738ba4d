"""SolConsole's session thread over a pretend pyghmi SOL client: a broken session is logged out and the
console logs in again by itself, the same callback getting the new session's output."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TypeVar

import pytest

from dpustack.drivers.bmc import BmcAccess
from dpustack.drivers.bmc import sol
from dpustack.drivers.bmc.sol import SolConsole

T = TypeVar("T")


class FakeSession:
    """pyghmi's IPMI session: whether and how it was logged out."""

    def __init__(self) -> None:
        self.broken = False
        self.logouts: list[bool] = []

    def logout(self, sessionok: bool = True) -> None:
        self.logouts.append(sessionok)
        self.broken = True


class FakeConsole:
    """pyghmi's SOL Console as SolConsole uses it; ``received`` plays what the BMC sends."""

    def __init__(self, bmc, userid, password, iohandler, port=623, force=False):
        self.login = (bmc, userid, password, port, force)
        self.received: Callable[[bytes | str | dict], None] = iohandler
        self.ipmi_session: FakeSession | None = FakeSession()
        self.typed = bytearray()
        self.closed = False

    def send_data(self, data: bytes) -> None:
        self.typed += data

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def wait_for_rsp(timeout: float) -> None:
        time.sleep(min(timeout, 0.01))


@pytest.fixture
def consoles(monkeypatch) -> list[FakeConsole]:
    """Every pyghmi console SolConsole makes, in order."""
    made: list[FakeConsole] = []
    lock = threading.Lock()

    def console(*args, **kwargs) -> FakeConsole:
        with lock:
            made.append(FakeConsole(*args, **kwargs))
            return made[-1]

    console.wait_for_rsp = FakeConsole.wait_for_rsp
    monkeypatch.setattr(sol, "pyghmi_console", SimpleNamespace(Console=console))
    monkeypatch.setattr(sol, "RETRY", 0.01)
    return made


def eventually(value: Callable[[], T], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while not (result := value()):
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.005)
    return result


def test_a_broken_session_is_logged_out_and_the_console_logs_in_again_with_the_same_callback(consoles):
    seen: list[bytes] = []
    console = SolConsole(BmcAccess("10.0.0.9", "admin", "s3cret"), port=6230)
    console.attach(seen.append)
    try:
        first = eventually(lambda: consoles and consoles[0])
        assert first.login == ("10.0.0.9", b"admin", b"s3cret", 6230, True)  # bytes: see SolConsole._connect
        first.received(b"login: ")
        session, first.ipmi_session = first.ipmi_session, None  # pyghmi's console forgets it when it breaks
        first.received({"error": "Connection lost"})

        second = eventually(lambda: len(consoles) > 1 and consoles[1])
        assert first.closed and session.logouts == [False]
        console.write(b"root\r")
        eventually(lambda: second.typed == b"root\r")
        second.received("root\r\n")
        assert seen == [b"login: ", b"root\r\n"] and not first.typed
    finally:
        console.detach()

    assert second.closed and second.ipmi_session.logouts == [False] and len(consoles) == 2


def test_a_session_pyghmi_marked_broken_itself_is_not_logged_out_again(consoles):
    console = SolConsole(BmcAccess("10.0.0.9", "admin", "s3cret"))
    console.attach(lambda data: None)
    first = eventually(lambda: consoles and consoles[0])
    first.ipmi_session.broken = True  # a login that failed: pyghmi dropped the session already
    first.received({"error": "Session failed to initialize"})
    eventually(lambda: len(consoles) > 1)
    console.detach()

    assert first.closed and first.ipmi_session.logouts == []
