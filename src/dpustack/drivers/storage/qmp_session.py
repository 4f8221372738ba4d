"""One QMP connection to a QEMU daemon, usable from any thread (qemu.qmp's QMPClient underneath).

    session = QmpSession(Path("/run/dpustack/qsd/qmp.sock"), timeout=10, daemon="qemu-storage-daemon")
    session.execute("query-block-exports", context="storage.list")

* qemu.qmp is asyncio; the session runs its own event loop in a thread of
  its own and hands each command to it, so callers need no event loop, may
  be in one already, and may be many threads (commands go one at a time).
* One connection, opened on first use and kept. The loop reads it all the
  time, so a daemon that went away (``kill -9``) is noticed at once; the next
  command opens a new connection (a restarted daemon is found again), and a
  command whose connection breaks under it is sent once more on a new one.
* Every wait is bounded by ``timeout``: a daemon that is down fails at once
  (no socket, connection refused), one that does not answer fails after
  ``timeout`` seconds, both with a :class:`DriverError` that says which.
* A command the daemon refuses raises DriverError with QEMU's own reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, QMPClient, Runstate, StateError

from dpustack.errors import DriverError

T = TypeVar("T")

#: qemu.qmp logs a failed connection as an error; every failure becomes a DriverError the caller reports
#: already, so only the library's own critical bugs are let through (clients named "dpustack.<daemon>")
_LIBRARY_LOG = "qemu.qmp.protocol.dpustack"

#: what a connection that broke under a command raises in qemu.qmp
_CONNECTION_LOST = (ExecInterruptedError, StateError, EOFError, OSError)


class QmpSession:
    """Commands to the daemon whose QMP monitor listens at the unix socket ``path``."""

    def __init__(self, path: Path, *, timeout: float, daemon: str):
        self.path = path
        self.timeout = timeout
        self.daemon = daemon
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: QMPClient | None = None
        logging.getLogger(_LIBRARY_LOG).setLevel(logging.CRITICAL)

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, context: str) -> Any:
        """The return value of ``command``; DriverError starting with ``context`` when it fails."""
        return self._run(self._execute(command, arguments or {}, context), context)

    def execute_until(self, command: str, arguments: dict[str, Any], *, event: str,
                      match: Callable[[dict[str, Any]], bool], context: str) -> None:
        """Run ``command``, then wait (within ``timeout``) for an ``event`` whose data ``match`` accepts."""
        self._run(self._execute_until(command, arguments, event, match, context), context)

    def close(self) -> None:
        """Close the connection and stop the loop's thread; the next command starts both again."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._drop(), loop).result(self.timeout)
            except FutureTimeout:
                pass  # a daemon that hangs cannot hold the agent's shutdown
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(self.timeout)
                if not thread.is_alive():
                    loop.close()

    # ------------------------------------------------------------- the loop
    def _run(self, coroutine: Coroutine[Any, Any, T], context: str) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name=f"qmp {self.path}")
                self._thread.start()
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            try:
                # the coroutine bounds each of its waits; this bound only guards against a stuck loop
                return future.result(6 * self.timeout + 1)
            except FutureTimeout:
                future.cancel()
                raise DriverError(f"{context}: no answer from {self._where()} within {self.timeout:g} s") from None

    async def _execute(self, command: str, arguments: dict[str, Any], context: str) -> Any:
        for attempt in (1, 2):
            client = await self._connected(context)
            try:
                return await self._bounded(client.execute(command, arguments or None), context, command)
            except _CONNECTION_LOST as exc:
                await self._drop()
                if attempt == 2:
                    raise DriverError(f"{context}: {self._where()} closed the connection during {command} "
                                      f"({type(exc).__name__}: {exc})") from exc
            except ExecuteError as exc:
                raise DriverError(f"{context}: {self.daemon} refused {command}: {exc}") from exc
            finally:
                client.events.clear()  # the default listener keeps every event; nothing reads it

    async def _execute_until(self, command: str, arguments: dict[str, Any], event: str,
                             match: Callable[[dict[str, Any]], bool], context: str) -> None:
        client = await self._connected(context)
        with client.listener(event, event_filter=lambda message: match(message.get("data", {}))) as listener:
            await self._execute(command, arguments, context)
            if self._client is not client:
                return  # the daemon went away under the command, and with it whatever the event was about
            try:
                await self._bounded(listener.get(), context, f"the {event} event")
            except _CONNECTION_LOST:
                await self._drop()

    async def _bounded(self, awaitable: Coroutine[Any, Any, T], context: str, what: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except asyncio.TimeoutError:
            raise DriverError(f"{context}: {self._where()} did not answer {what} within {self.timeout:g} s "
                              f"(is it hung?)") from None

    async def _connected(self, context: str) -> QMPClient:
        """The open connection, or a new one if there is none or the daemon closed it."""
        if self._client is not None and self._client.runstate == Runstate.RUNNING:
            return self._client
        await self._drop()
        client = QMPClient(f"dpustack.{self.daemon}")
        try:
            await asyncio.wait_for(client.connect(str(self.path)), self.timeout)
        except asyncio.TimeoutError:
            await _quietly_disconnect(client, self.timeout)
            raise DriverError(f"{context}: {self._where()} did not greet within {self.timeout:g} s "
                              f"(is it hung, or is another client on that monitor?)") from None
        except ConnectError as exc:
            await _quietly_disconnect(client, self.timeout)
            raise DriverError(f"{context}: cannot reach {self._where()}: {_reason(exc.exc)}") from exc
        self._client = client
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _quietly_disconnect(client, self.timeout)

    def _where(self) -> str:
        return f"{self.daemon} at {self.path}"


async def _quietly_disconnect(client: QMPClient, timeout: float) -> None:
    """Disconnect, whatever state the connection is in; qemu.qmp re-raises what broke it: ignored."""
    try:
        await asyncio.wait_for(client.disconnect(), timeout)
    except Exception:  # noqa: BLE001 - the connection is being thrown away
        pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no QMP socket there (is it running?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (it is not running)"
    return f"{type(exc).__name__}: {exc}"
