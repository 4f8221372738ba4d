"""StorageDriver: binds remote volumes to storage functions (SPDK / qemu-storage-daemon style)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from dpustack.drivers.base import Driver
from dpustack.errors import DriverError


@dataclass(frozen=True)
class Attachment:
    """A volume served to the host through a storage function."""

    function_id: str
    volume_id: str
    uri: str


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
