"""IPMI serial-over-LAN as a :class:`~dpustack.drivers.bmc.SerialConsole`, with pyghmi's SOL client.

One thread per attached console owns pyghmi's session: it logs in,
activates the SOL payload (taking it from another session, as
``ipmitool sol activate`` after ``sol deactivate`` would), waits for
packets (``wait_for_rsp``) and, between waits, sends what was typed. When
the session breaks (the BMC restarted, another client took the payload, no
answer) it logs in again after :data:`RETRY` seconds, for as long as the
console is attached. Output reaches the callback in that thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pyghmi import exceptions as pyghmi_exceptions
from pyghmi.ipmi import console as pyghmi_console

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
            try:
                session = self._activate(stop, broken)
            except (pyghmi_exceptions.IpmiException, OSError) as exc:
                log.info("SOL on %s not open: %s", self._access.address, exc)
                session = None
            if session is not None:
                log.info("SOL on %s open", self._access.address)
                self._serve(session, stop, broken)
                _close(session)
                log.info("SOL on %s closed", self._access.address)
            stop.wait(RETRY)

    def _activate(self, stop: threading.Event, broken: threading.Event) -> pyghmi_console.Console | None:
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

        session = pyghmi_console.Console(self._access.address, self._access.username, self._access.password,
                                         received, port=self._port, force=True)
        return None if broken.is_set() else session

    def _serve(self, session: pyghmi_console.Console, stop: threading.Event, broken: threading.Event) -> None:
        while not stop.is_set() and not broken.is_set():
            with self._lock:
                typed, self._pending = bytes(self._pending), bytearray()
            if typed:
                session.send_data(typed)
            pyghmi_console.Console.wait_for_rsp(WAIT)


def _close(session: pyghmi_console.Console) -> None:
    try:
        session.close()
    except (pyghmi_exceptions.IpmiException, OSError):
        pass
