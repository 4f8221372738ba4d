"""IPMI serial-over-LAN as a :class:`~dpustack.drivers.bmc.SerialConsole`, with pyghmi's SOL client.

One thread per attached console owns pyghmi's session: it logs in,
activates the SOL payload (taking it from another session, as
``ipmitool sol activate`` after ``sol deactivate`` would), waits for
packets (``wait_for_rsp``) and, between waits, sends what was typed. When
the session breaks (the BMC restarted, another client took the payload, no
answer) it logs that session out and logs in again after :data:`RETRY`
seconds, in a new session, for as long as the console is attached; the
new session's output reaches the same callback (in that thread). pyghmi
notices a dead BMC when typed text goes unacknowledged (about 13 s), on an
idle console only through its keepalives (80 s in the lab).

pyghmi shares one session per BMC and user in a process and hands it to
the next login even when it is dead, hence the logout, which drops it from
pyghmi's tables (and the credentials as bytes: see :meth:`SolConsole._connect`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import NamedTuple

from pyghmi import exceptions as pyghmi_exceptions
from pyghmi.ipmi import console as pyghmi_console
from pyghmi.ipmi.private import session as ipmi_session

from dpustack.drivers.bmc import BmcAccess, SerialConsole

log = logging.getLogger(__name__)

RETRY = 3.0
WAIT = 0.1  # seconds between looking for typed input while waiting for packets
MAX_PENDING = 64 * 1024
CLOSE_TIMEOUT = 10.0  # seconds detach waits for the session to close


class SolConsole(SerialConsole):
    """The SOL payload of the BMC at ``access.address``:``port``."""

    def __init__(self, access: BmcAccess, port: int = 623):
        self._access = access
        self._port = port
        self._lock = threading.Lock()
        self._output: Callable[[bytes], None] | None = None
        self._pending = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, output: Callable[[bytes], None]) -> None:
        self.detach()
        with self._lock:
            self._output = output
            self._stop = stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(stop,), name=f"sol-{self._access.address}",
                                            daemon=True)
            self._thread.start()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._output is None:
                return
            self._pending += data
            del self._pending[:-MAX_PENDING]

    def detach(self) -> None:
        """Stop forwarding and return once the SOL session is closed (deactivated on the BMC)."""
        with self._lock:
            self._output = None
            self._pending.clear()
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=CLOSE_TIMEOUT)

    # ---------------------------------------------------- the session thread
    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            broken = threading.Event()
            connection = None
            try:
                connection = self._connect(stop, broken)
                log.info("SOL on %s: logging in", self._access.address)
                self._serve(connection, stop, broken)
            except (pyghmi_exceptions.IpmiException, OSError) as exc:
                log.info("SOL on %s not open: %s", self._access.address, exc)
            finally:
                if connection is not None:
                    _close(connection)
                    log.info("SOL on %s closed", self._access.address)
            stop.wait(RETRY)

    def _connect(self, stop: threading.Event, broken: threading.Event) -> _Connection:
        """Start logging in and activating the payload (pyghmi goes on in ``wait_for_rsp``)."""
        def received(data: bytes | str | dict) -> None:
            if isinstance(data, dict):
                if "error" in data:
                    log.info("SOL on %s ended: %s", self._access.address, data["error"])
                    broken.set()
                return
            with self._lock:
                output = None if stop.is_set() else self._output
            if output is not None:
                output(data.encode() if isinstance(data, str) else bytes(data))

        # bytes, not str: pyghmi files a session being set up under the credentials as given and drops it
        # under its own encoded copy, so with str a later login in this process would get this session back
        console = pyghmi_console.Console(self._access.address, self._access.username.encode(),
                                         self._access.password.encode(), received, port=self._port, force=True)
        return _Connection(console, console.ipmi_session)

    def _serve(self, connection: _Connection, stop: threading.Event, broken: threading.Event) -> None:
        while not stop.is_set() and not broken.is_set():
            with self._lock:
                typed, self._pending = bytes(self._pending), bytearray()
            if typed:
                connection.console.send_data(typed)
            pyghmi_console.Console.wait_for_rsp(WAIT)


class _Connection(NamedTuple):
    """pyghmi's SOL console and its IPMI session (which the console forgets when it breaks)."""

    console: pyghmi_console.Console
    session: ipmi_session.Session | None


def _close(connection: _Connection) -> None:
    """Deactivate the payload and log the session out, so that pyghmi, which shares one session per BMC and
    user in a process, opens a new one at the next login instead of handing back this (perhaps dead) one."""
    try:
        connection.console.close()
    except (pyghmi_exceptions.IpmiException, OSError):
        pass
    session = connection.session
    if session is not None and not session.broken:
        try:
            session.logout(sessionok=False)
        except (pyghmi_exceptions.IpmiException, OSError):
            pass
