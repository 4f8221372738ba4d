"""The serial console of each instance on this node: held open while the instance exists, logged, shared.

The console of an instance is opened before it is first powered on (so its
log starts with the firmware), and again when the agent starts with the
instance recorded; it is closed, and its log removed, when the instance is
deleted. What the instance writes is appended to
``<state_dir>/consoles/<uuid>.log`` (rotated to ``<uuid>.log.1`` at
:data:`LOG_LIMIT` bytes) and sent to every subscriber; what any subscriber
types reaches the console. A BMC serves one serial console session, so this
is the one session, and users share it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from dpustack.agent.instance_runtime import InstanceRuntime
from dpustack.drivers.bmc import SerialConsole
from dpustack.errors import DpustackError, NotFound

log = logging.getLogger(__name__)

LOG_LIMIT = 1024 * 1024
Output = Callable[[bytes], None]


class _Tap:
    """One instance's open console: its log file and subscribers."""

    def __init__(self, uuid: str, console: SerialConsole, path: Path):
        self.uuid = uuid
        self.console = console
        self.path = path
        self.lock = threading.Lock()
        self.subscribers: list[Output] = []
        self.file = path.open("ab")

    def received(self, data: bytes) -> None:
        with self.lock:
            if self.file.closed:
                return
            self.file.write(data)
            self.file.flush()
            if self.file.tell() >= LOG_LIMIT:
                self.file.close()
                os.replace(self.path, _previous(self.path))
                self.file = self.path.open("ab")
            subscribers = list(self.subscribers)
        for output in subscribers:
            try:
                output(data)
            except Exception:  # a subscriber that went away must not stop the log or the others
                log.debug("console of %s: dropping a subscriber that failed", self.uuid, exc_info=True)
                self.unsubscribe(output)

    def unsubscribe(self, output: Output) -> None:
        with self.lock:
            if output in self.subscribers:
                self.subscribers.remove(output)

    def close(self) -> None:
        self.console.detach()
        with self.lock:
            self.file.close()
            self.subscribers.clear()


class Consoles:
    """The consoles of the instances ``runtime`` runs, logged under ``directory``."""

    def __init__(self, directory: Path, runtime: InstanceRuntime):
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._runtime = runtime
        self._lock = threading.Lock()
        self._taps: dict[str, _Tap] = {}
        self._without: set[str] = set()  # instances said to have no console (warned once, retried each sync)

    def open(self, uuid: str) -> bool:
        """Hold instance ``uuid``'s console open from now on (idempotent); False, logged, if the node's
        hardware offers no console dpustack can carry (the instance works without one)."""
        with self._lock:
            if uuid in self._taps:
                return True
            try:
                console = self._runtime.serial_console(uuid)
            except DpustackError as exc:
                level = logging.DEBUG if uuid in self._without else logging.WARNING
                log.log(level, "instance %s has no serial console: %s", uuid, exc.message)
                self._without.add(uuid)
                return False
            self._without.discard(uuid)
            tap = _Tap(uuid, console, self._log_path(uuid))
            self._taps[uuid] = tap
        console.attach(tap.received)
        log.info("console of instance %s open, logged to %s", uuid, tap.path)
        return True

    def close(self, uuid: str) -> None:
        """Let instance ``uuid``'s console go and remove its log (idempotent)."""
        with self._lock:
            tap = self._taps.pop(uuid, None)
            self._without.discard(uuid)
        if tap is not None:
            tap.close()
        path = self._log_path(uuid)
        for leftover in (path, _previous(path)):
            leftover.unlink(missing_ok=True)

    def sync(self, uuids: Iterable[str]) -> None:
        """Hold open the consoles of exactly the instances ``uuids``."""
        wanted = set(uuids)
        with self._lock:
            gone = set(self._taps) - wanted
        for uuid in gone:
            self.close(uuid)
        for uuid in sorted(wanted):
            self.open(uuid)

    def close_all(self) -> None:
        """Let every console go, keeping the logs (the agent stops)."""
        with self._lock:
            taps, self._taps = list(self._taps.values()), {}
        for tap in taps:
            tap.close()

    def subscribe(self, uuid: str, output: Output) -> Callable[[], None]:
        """Send instance ``uuid``'s console output to ``output`` (from a console thread) until the returned
        function is called; NotFound if its console is not open."""
        tap = self._tap(uuid)
        with tap.lock:
            tap.subscribers.append(output)
        return lambda: tap.unsubscribe(output)

    def write(self, uuid: str, data: bytes) -> None:
        """Type ``data`` on instance ``uuid``'s console."""
        self._tap(uuid).console.write(data)

    def log(self, uuid: str, limit: int) -> bytes:
        """The last ``limit`` bytes instance ``uuid`` wrote on its console; NotFound if it has no log."""
        path = self._log_path(uuid)
        with self._lock:
            tap = self._taps.get(uuid)
        if tap is None and not path.exists():
            raise NotFound(f"instance '{uuid}' has no console log on this node", field="uuid")
        with tap.lock if tap is not None else contextlib.nullcontext():
            chunks = [_tail(candidate, limit) for candidate in (_previous(path), path)]
        return b"".join(chunks)[-limit:] if limit else b""

    def _tap(self, uuid: str) -> _Tap:
        with self._lock:
            tap = self._taps.get(uuid)
        if tap is None:
            raise NotFound(f"instance '{uuid}' has no open console on this node", field="uuid")
        return tap

    def _log_path(self, uuid: str) -> Path:
        return self._directory / f"{uuid}.log"


def _previous(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def _tail(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - limit))
            return file.read()
    except FileNotFoundError:
        return b""
