"""A daemon thread that calls a function every few seconds until stopped."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Call ``function`` every ``interval`` seconds (first right away when ``run_first``)."""

    def __init__(self, name: str, interval: float, function: Callable[[], object], *, run_first: bool = True):
        self.name = name
        self._interval = interval
        self._function = function
        self._run_first = run_first
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait for the current call to finish."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        if not self._run_first and self._stopping.wait(self._interval):
            return
        while True:
            try:
                self._function()
            except Exception:  # the loop must survive a bug in one tick; the trace is logged
                log.exception("%s: tick failed", self.name)
            if self._stopping.wait(self._interval):
                return
