"""The storage node's `qemu-storage-daemon`, driven over one QMP connection with the `qemu.qmp` library.

The daemon holds the block graph of every exported volume and the NBD
server the DPUs connect to. The connection is made on first use, and made
again when the daemon went away (a command that finds the connection gone
is sent once more on a new one, so a restarted daemon is simply used
again); the NBD server is started on every new connection unless it runs.
Every command has a timeout. The daemon's refusals are `Refused` with its
reason; `Unreachable` says that no daemon listens on the socket (so none
holds any volume open); anything else is a `DriverError`.

QMP is asynchronous; this class runs its own event loop, one command at a
time (a lock), so the controller's worker threads can share one connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, QMPClient, QMPError, StateError

from dpustack.errors import DriverError

COMMAND_TIMEOUT = 10.0  # seconds; graph changes take milliseconds
JOB_TIMEOUT = 3600.0  # seconds a block job (copying data) may take
JOB_POLL = 0.02  # seconds between looks at a running job
_T = TypeVar("_T")


class Unreachable(DriverError):
    """No storage daemon answers on the QMP socket."""


class Refused(DriverError):
    """The storage daemon answered a command with an error."""


class _Lost(Exception):
    """The connection broke before the answer came: worth one more try on a new connection."""


@dataclass(frozen=True)
class BlockNode:
    """A node of the daemon's block graph: its name, the size of the disk it shows, and the file of the
    node it rests on (None while it rests on nothing)."""

    name: str
    virtual_size: int
    backing_file: str | None


@dataclass(frozen=True)
class BlockExport:
    """An export of the daemon: its id and the node it serves."""

    id: str
    node_name: str


def _nbd_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _new_client() -> QMPClient:
    return QMPClient("storage-node")


class StorageNode:
    """The daemon behind `qmp_socket`, whose NBD server listens on `nbd_host`:`nbd_port`."""

    def __init__(self, qmp_socket: Path, nbd_host: str, nbd_port: int, *, timeout: float = COMMAND_TIMEOUT,
                 job_timeout: float = JOB_TIMEOUT) -> None:
        self.qmp_socket = qmp_socket
        self.nbd_host = nbd_host
        self.nbd_port = nbd_port
        self.timeout = timeout
        self.job_timeout = job_timeout
        self._loop = asyncio.new_event_loop()
        self._client: QMPClient | None = None
        self._lock = threading.Lock()

    def uri(self, export_name: str) -> str:
        """The NBD URI of an export, as a DPU opens it."""
        return f"nbd://{_nbd_host(self.nbd_host)}:{self.nbd_port}/{export_name}"

    # -- the connection ---------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return self._loop.run_until_complete(asyncio.wait_for(work, self.timeout))

    def _connect(self) -> QMPClient:
        client = self._run(_new_client())
        try:
            self._run(client.connect(str(self.qmp_socket)))
        except ConnectError as exc:
            if isinstance(exc.exc, (FileNotFoundError, ConnectionRefusedError)):
                raise Unreachable(f"no storage daemon answers on {self.qmp_socket}: {exc.exc.strerror}") from exc
            raise DriverError(f"cannot talk QMP to the storage daemon on {self.qmp_socket}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            raise DriverError(f"the storage daemon on {self.qmp_socket} did not greet within {self.timeout:.0f}s "
                              "(its monitor serves one client at a time: is another one connected?)") from exc
        self._client = client
        address = {"type": "inet", "data": {"host": self.nbd_host, "port": str(self.nbd_port)}}
        try:
            self._send("nbd-server-start", {"addr": address}, again=False)
        except Refused as exc:
            # The daemon has no query for its NBD server; this refusal is how it says the server runs.
            if "already running" not in exc.message:
                self._drop()
                raise Refused(f"the storage daemon cannot serve NBD on {self.nbd_host}:{self.nbd_port}: "
                              f"{exc.message}") from exc
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            self._run(client.disconnect())
        except (QMPError, OSError, EOFError, asyncio.TimeoutError):
            pass  # disconnect re-raises why the connection ended, which the caller already reports

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command and return its answer; on a lost connection, once more on a new one."""
        with self._lock:
            try:
                return self._send(command, arguments or {}, again=True)
            except _Lost:
                return self._send(command, arguments or {}, again=False)

    def _send(self, command: str, arguments: dict[str, Any], *, again: bool) -> Any:
        client = self._client or self._connect()
        try:
            return self._run(client.execute(command, arguments))
        except ExecuteError as exc:
            raise Refused(f"the storage daemon refused {command}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            self._drop()
            raise DriverError(f"the storage daemon did not answer {command} within {self.timeout:.0f}s") from exc
        except (ExecInterruptedError, StateError, OSError, EOFError) as exc:
            self._drop()
            if again:
                raise _Lost() from exc
            raise DriverError(f"lost the storage daemon during {command}: {exc}") from exc

    def disconnect(self) -> None:
        """Let go of the connection (the daemon's monitor serves one client at a time); the next command
        connects again."""
        with self._lock:
            self._drop()

    def close(self) -> None:
        """Close the connection and the event loop for good; the daemon keeps running."""
        with self._lock:
            self._drop()
            self._loop.close()

    # -- queries ----------------------------------------------------------

    def nodes(self) -> list[BlockNode]:
        return [BlockNode(node["node-name"], int(node["image"]["virtual-size"]), node.get("backing_file"))
                for node in self.execute("query-named-block-nodes", {"flat": True})]

    def exports(self) -> list[BlockExport]:
        return [BlockExport(export["id"], export["node-name"]) for export in self.execute("query-block-exports")
                if not export["shutting-down"]]

    # -- the block graph and its exports ----------------------------------

    def add_node(self, options: dict[str, Any]) -> None:
        """`blockdev-add` of a node (with its children, if `options` nests them)."""
        self.execute("blockdev-add", options)

    def delete_node(self, name: str) -> None:
        self.execute("blockdev-del", {"node-name": name})

    def add_export(self, export_id: str, node_name: str, name: str) -> None:
        """A writable NBD export of `node_name`, which clients open by `name`."""
        self.execute("block-export-add", {"type": "nbd", "id": export_id, "node-name": node_name, "name": name,
                                          "writable": True})

    def remove_export(self, export_id: str) -> None:
        """Drop the export and its clients' connections; returns once the daemon has let go of it."""
        self.execute("block-export-del", {"id": export_id, "mode": "hard"})
        deadline = time.monotonic() + self.timeout
        while any(export["id"] == export_id for export in self.execute("query-block-exports")):
            if time.monotonic() > deadline:
                raise DriverError(f"the storage daemon still holds export {export_id} after {self.timeout:.0f}s")
            time.sleep(JOB_POLL)

    def resize(self, node_name: str, size: int) -> None:
        self.execute("block_resize", {"node-name": node_name, "size": size})

    def snapshot(self, node_name: str, file: Path, new_node_name: str) -> None:
        """Freeze `node_name`: the qcow2 `file` (an overlay on its file, made beforehand) is opened as
        `new_node_name`, put on top of it, and takes over its users (the exports), in one step.

        The new node is added by `blockdev-add`, so the monitor holds it as it holds the node a graph
        was added by: it stays while no export serves it (a resize drops the exports), and
        `delete_node` closes it. (`blockdev-snapshot-sync` would make a node only its users hold,
        gone with the last export.) Until the second command, `new_node_name` rests on nothing.
        """
        self.add_node({"driver": "qcow2", "node-name": new_node_name,
                       "file": {"driver": "file", "filename": str(file)}, "backing": None})
        self.execute("blockdev-snapshot", {"node": node_name, "overlay": new_node_name})

    def stream(self, job_id: str, device: str, base_node: str | None = None) -> None:
        """Copy into `device` what the nodes below it hold down to `base_node` (None: all), then put it on
        `base_node`; returns when the job has finished."""
        if self._job(job_id) is not None:  # left by an interrupted attempt: let it end first
            self._wait(job_id, check=False)
        arguments: dict[str, Any] = {"job-id": job_id, "device": device, "auto-dismiss": False}
        if base_node is not None:
            arguments["base-node"] = base_node
        self.execute("block-stream", arguments)
        self._wait(job_id, check=True)

    def _job(self, job_id: str) -> dict[str, Any] | None:
        return next((job for job in self.execute("query-jobs") if job["id"] == job_id), None)

    def _wait(self, job_id: str, *, check: bool) -> None:
        deadline = time.monotonic() + self.job_timeout
        while (job := self._job(job_id)) is not None and job["status"] != "concluded":
            if time.monotonic() > deadline:
                raise DriverError(f"block job {job_id} of the storage daemon did not finish within "
                                  f"{self.job_timeout:.0f}s")
            time.sleep(JOB_POLL)
        if job is None:
            if check:
                raise DriverError(f"block job {job_id} of the storage daemon vanished")
            return
        self.execute("job-dismiss", {"id": job_id})
        if check and job.get("error"):
            raise DriverError(f"block job {job_id} of the storage daemon failed: {job['error']}")
