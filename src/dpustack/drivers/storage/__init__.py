"""StorageDriver: binds remote volumes to storage functions (SPDK / qemu-storage-daemon style)."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dpustack.drivers.base import Driver
from dpustack.errors import DriverError

SOCKET_SUFFIX = ".sock"


@dataclass(frozen=True)
class Attachment:
    """A volume served to the host through a storage function."""

    function_id: str
    volume_id: str
    uri: str


def vhost_socket(socket_dir: Path, function_id: str) -> Path:
    """The vhost-user-blk socket a storage function's volume is served on (the storage driver's export,
    the lab host machine's disk): ``<socket_dir>/<function_id>.sock``."""
    return Path(socket_dir) / f"{function_id}{SOCKET_SUFFIX}"


class StorageDriver(Driver):
    """Attach and detach volumes to storage functions."""

    interface = "storage"

    @abc.abstractmethod
    def attach(self, function_id: str, volume_id: str, uri: str, *, may_exist: bool = True) -> Attachment:
        """Serve ``volume_id`` (found at ``uri``) through ``function_id``; an identical attachment is fine."""

    @abc.abstractmethod
    def detach(self, function_id: str, volume_id: str, *, if_exists: bool = True) -> None:
        """Stop serving ``volume_id`` through ``function_id``; a missing attachment is fine when ``if_exists``."""

    @abc.abstractmethod
    def list(self) -> list[Attachment]:
        """Every attachment the storage backend has, ours or not."""

    def snapshot(self, function_id: str, volume_id: str, name: str) -> None:
        """Snapshot an attached volume while the host uses it (optional)."""
        raise DriverError(f"{type(self).__name__} does not support snapshots")


def existing_attachment(context: str, attachments: Iterable[Attachment], wanted: Attachment,
                        may_exist: bool) -> Attachment | None:
    """The rule every driver's ``attach`` keeps: one volume per function and one function per volume.

    Returns the attachment already there when it is ``wanted`` (and ``may_exist``), None when the
    attachment can be made; raises DriverError, prefixed with ``context``, when the volume or the
    function is taken otherwise.
    """
    attachments = list(attachments)
    for existing in attachments:
        if existing.volume_id == wanted.volume_id:
            if existing != wanted:
                raise DriverError(f"{context}: volume '{wanted.volume_id}' is attached to function "
                                  f"'{existing.function_id}' from '{existing.uri}'")
            if not may_exist:
                raise DriverError(f"{context}: volume '{wanted.volume_id}' is already attached")
            return existing
    for other in attachments:
        if other.function_id == wanted.function_id:
            raise DriverError(f"{context}: function '{wanted.function_id}' already serves volume "
                              f"'{other.volume_id}'")
    return None
