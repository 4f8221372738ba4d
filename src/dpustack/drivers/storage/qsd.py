"""StorageDriver ``qsd``: volumes served to the host by the DPU's qemu-storage-daemon, over QMP.

    driver = QsdStorageDriver(qmp_socket="/run/qemu-storage-daemon/qmp.sock",
                              socket_dir="/run/qemu-storage-daemon/vhost-user-blk", timeout=10)
    driver.attach("storage-vol1", "vol1", "nbd://10.0.0.5:10809/vol1")

* ``attach`` = ``blockdev-add`` of an NBD client node (driver ``nbd``)
  connected to the volume's export on the storage node (with
  ``reconnect-delay``: when the storage node goes away, e.g. it restarts,
  the node reconnects by itself and holds the host's I/O that long instead
  of failing it; without it the node fails every request for good), then
  ``block-export-add`` of a writable ``vhost-user-blk`` export of that node
  on ``<socket_dir>/<function_id>.sock``: the socket the host's PCIe storage
  function is backed by. A call that fails half way removes the node it added.
* ``detach`` = ``block-export-del`` (mode ``hard``: a client still connected
  is cut off), a wait for the ``BLOCK_EXPORT_DELETED`` event, ``blockdev-del``
  of the node, and the socket file removed.
* ``list`` reads ``query-block-exports`` and ``query-named-block-nodes``:
  the export id names the function and the volume, the node's address is the
  URI (``qsd_names``, ``nbd_uri``). No file on the side: after a daemon
  restart the list is empty and the agent's reconcile attaches every volume
  again, at the same socket.
* One QMP connection for every call (``qmp_session``), reopened when the
  daemon restarted; every wait bounded by ``timeout``.

URIs are kept in their canonical form (``nbd://HOST:PORT/EXPORT``, port
written): attaching ``nbd://h/e`` gives an attachment whose uri is
``nbd://h:10809/e``, and attaching either again is the same attachment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import NonNegativeInt, PositiveFloat, field_validator

from dpustack.drivers.options import DriverOptions, StatePath
from dpustack.drivers.storage import Attachment, StorageDriver, existing_attachment, vhost_socket
from dpustack.drivers.storage.nbd_uri import UNIX_PATH_MAX, NbdAddress, address_of_node, parse_nbd_uri
from dpustack.drivers.storage.qmp_session import QmpSession
from dpustack.drivers.storage.qsd_names import export_id, node_name, parse_export_id
from dpustack.errors import DriverError

DAEMON = "qemu-storage-daemon"
DEFAULT_RECONNECT_DELAY = 5
DEFAULT_QMP_SOCKET = Path("/run/qemu-storage-daemon/qmp.sock")
DEFAULT_SOCKET_DIR = Path("/run/qemu-storage-daemon/vhost-user-blk")
EXPORT_TYPE = "vhost-user-blk"


class QsdStorageOptions(DriverOptions):
    """[storage.qsd]: the QMP socket of the DPU's qemu-storage-daemon, the directory of the storage
    functions' vhost-user-blk sockets (``<socket_dir>/<function_id>.sock``; relative paths are under
    the agent's state_dir), how long one QMP wait may take (s), and how long a volume's I/O waits
    for its storage node to come back after the connection broke (whole seconds; 0: it fails at once)."""

    qmp_socket: StatePath = DEFAULT_QMP_SOCKET
    socket_dir: StatePath = DEFAULT_SOCKET_DIR
    timeout: PositiveFloat = 10.0
    reconnect_delay: NonNegativeInt = DEFAULT_RECONNECT_DELAY

    @field_validator("qmp_socket")
    @classmethod
    def _fits_a_unix_socket_address(cls, path: Path) -> Path:
        if len(str(path).encode()) > UNIX_PATH_MAX:
            raise ValueError(f"a unix socket path has at most {UNIX_PATH_MAX} bytes, '{path}' is longer")
        return path

    @field_validator("socket_dir")
    @classmethod
    def _leaves_room_for_socket_names(cls, path: Path) -> Path:
        if len(str(vhost_socket(path, "x")).encode()) > UNIX_PATH_MAX:
            raise ValueError(f"'{path}' leaves no room for socket names in a unix socket path "
                             f"({UNIX_PATH_MAX} bytes)")
        return path


@dataclass(frozen=True)
class _Served:
    """One of the driver's exports as the daemon has it."""

    attachment: Attachment
    export_id: str
    node_name: str


class QsdStorageDriver(StorageDriver):
    """Attachments as vhost-user-blk exports of NBD client nodes in one qemu-storage-daemon."""

    options = QsdStorageOptions

    def __init__(self, qmp_socket: Path | str = DEFAULT_QMP_SOCKET, socket_dir: Path | str = DEFAULT_SOCKET_DIR,
                 timeout: float = 10.0, reconnect_delay: int = DEFAULT_RECONNECT_DELAY):
        if not timeout or timeout <= 0:
            raise DriverError(f"storage: timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(reconnect_delay, int) or reconnect_delay < 0:
            raise DriverError(f"storage: reconnect_delay must be a whole number of seconds, not {reconnect_delay!r}")
        self.qmp_socket = Path(qmp_socket)
        self.socket_dir = Path(socket_dir)
        self.timeout = float(timeout)
        self.reconnect_delay = reconnect_delay
        self._qmp = QmpSession(self.qmp_socket, timeout=self.timeout, daemon=DAEMON)
        self._lock = threading.RLock()

    # ------------------------------------------------------------ interface
    def validate(self) -> None:
        """Check the daemon answers on its QMP socket."""
        self._qmp.execute("query-version", context="storage.validate")

    def socket_path(self, function_id: str) -> Path:
        """The vhost-user-blk socket that serves ``function_id``'s volume."""
        return vhost_socket(self.socket_dir, function_id)

    def attach(self, function_id: str, volume_id: str, uri: str, *, may_exist: bool = True) -> Attachment:
        context = "storage.attach"
        socket_file = self._checked_socket_path(context, function_id)
        _check_id(context, "volume", volume_id)
        try:
            address = parse_nbd_uri(uri)
        except ValueError as exc:
            raise DriverError(f"{context}: volume '{volume_id}': {exc}") from exc
        wanted = Attachment(function_id, volume_id, address.uri)
        with self._lock:
            served, nodes = self._state(context)
            existing = existing_attachment(context, [o.attachment for o in served], wanted, may_exist)
            if existing is not None:
                return existing
            added = self._ensure_nbd_node(context, volume_id, address, nodes.get(node_name(volume_id)))
            try:
                self._export(context, function_id, volume_id, socket_file)
            except DriverError:
                if added:
                    self._delete_node_quietly(context, node_name(volume_id))
                raise
            return wanted

    def detach(self, function_id: str, volume_id: str, *, if_exists: bool = True) -> None:
        context = "storage.detach"
        socket_file = self._checked_socket_path(context, function_id)
        with self._lock:
            served, nodes = self._state(context)
            mine = next((s for s in served if s.attachment.function_id == function_id
                         and s.attachment.volume_id == volume_id), None)
            if mine is None:
                if node_name(volume_id) in nodes and not any(s.attachment.volume_id == volume_id for s in served):
                    # an attach stopped half way and left the volume's node without an export
                    self._qmp.execute("blockdev-del", {"node-name": node_name(volume_id)},
                                      context=f"{context}: volume '{volume_id}'")
                if not any(s.attachment.function_id == function_id for s in served):
                    socket_file.unlink(missing_ok=True)  # left by a daemon that was killed
                if not if_exists:
                    raise DriverError(f"{context}: volume '{volume_id}' is not attached to function "
                                      f"'{function_id}'")
                return
            self._qmp.execute_until("block-export-del", {"id": mine.export_id, "mode": "hard"},
                                    event="BLOCK_EXPORT_DELETED", match=lambda data: data.get("id") == mine.export_id,
                                    context=f"{context}: function '{function_id}'")
            self._qmp.execute("blockdev-del", {"node-name": mine.node_name},
                              context=f"{context}: volume '{volume_id}'")
            socket_file.unlink(missing_ok=True)

    def list(self) -> list[Attachment]:
        with self._lock:
            served, _ = self._state("storage.list")
            return sorted((s.attachment for s in served), key=lambda a: a.volume_id)

    def close(self) -> None:
        """Close the QMP connection (the next call opens a new one)."""
        self._qmp.close()

    # ------------------------------------------------------------- helpers
    def _state(self, context: str) -> tuple[list[_Served], dict[str, dict[str, Any]]]:
        """The driver's exports, each with the URI its node connects to, and every node by name."""
        exports = self._qmp.execute("query-block-exports", context=context)
        nodes = {node["node-name"]: node for node in
                 self._qmp.execute("query-named-block-nodes", {"flat": True}, context=context)}
        served = []
        for export in exports:
            ids = parse_export_id(export["id"])
            if export["type"] != EXPORT_TYPE or ids is None:
                continue
            node = nodes.get(export["node-name"], {})
            uri = _uri_of(node) or f"(node '{export['node-name']}' has no NBD address)"
            served.append(_Served(Attachment(*ids, uri), export["id"], export["node-name"]))
        return served, nodes

    def _ensure_nbd_node(self, context: str, volume_id: str, address: NbdAddress,
                         left: dict[str, Any] | None) -> bool:
        """Make the volume's NBD client node; False if it is there already. A node ``left`` by an attach
        that stopped half way is taken when it has the same address, replaced when not."""
        name = node_name(volume_id)
        where = f"{context}: volume '{volume_id}'"
        if left is not None:
            if _uri_of(left) == address.uri:
                return False
            self._qmp.execute("blockdev-del", {"node-name": name}, context=where)
        self._qmp.execute("blockdev-add", {
            "driver": "nbd", "node-name": name, "server": address.qmp_server(), "export": address.export,
            "discard": "unmap", "reconnect-delay": self.reconnect_delay,
        }, context=f"{where} at {address.uri}")
        return True

    def _export(self, context: str, function_id: str, volume_id: str, socket_file: Path) -> None:
        """Export the volume's node as vhost-user-blk on the function's socket."""
        try:
            socket_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DriverError(f"{context}: cannot make the socket directory {socket_file.parent}: "
                              f"{exc.strerror}") from exc
        self._qmp.execute("block-export-add", {
            "type": EXPORT_TYPE, "id": export_id(function_id, volume_id), "node-name": node_name(volume_id),
            "writable": True, "addr": {"type": "unix", "path": str(socket_file)},
        }, context=f"{context}: function '{function_id}'")

    def _delete_node_quietly(self, context: str, name: str) -> None:
        try:
            self._qmp.execute("blockdev-del", {"node-name": name}, context=context)
        except DriverError:
            pass  # the error that made us undo is the one to report; the node is found again next time

    def _checked_socket_path(self, context: str, function_id: str) -> Path:
        _check_id(context, "function", function_id)
        if "/" in function_id or function_id.startswith("."):
            raise DriverError(f"{context}: function id '{function_id}' cannot name a socket file "
                              f"(no '/', not starting with '.')")
        path = self.socket_path(function_id)
        if len(str(path).encode()) > UNIX_PATH_MAX:
            raise DriverError(f"{context}: the socket of function '{function_id}', {path}, is longer than a "
                              f"unix socket path may be ({UNIX_PATH_MAX} bytes): use a shorter socket_dir")
        return path


def _check_id(context: str, kind: str, value: str) -> None:
    if not isinstance(value, str) or not value or "\0" in value:
        raise DriverError(f"{context}: a {kind} id is a non-empty string, not {value!r}")


def _uri_of(node: dict[str, Any]) -> str | None:
    """The canonical URI of an NBD client node, None for a node of any other kind."""
    if node.get("drv") != "nbd":
        return None
    address = address_of_node(node.get("file", ""))
    return address.uri if address else None
