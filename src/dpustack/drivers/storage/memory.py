"""In-memory StorageDriver: attachments vanish with the process."""

from __future__ import annotations

import threading

from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.storage import Attachment, StorageDriver, existing_attachment
from dpustack.errors import DriverError


class MemoryStorageDriver(StorageDriver):
    """One volume per storage function and one function per volume, kept in a dict."""

    def __init__(self) -> None:
        self.faults = FaultInjector("storage")
        self._attachments: dict[str, Attachment] = {}  # by volume id
        self._lock = threading.Lock()

    def attach(self, function_id: str, volume_id: str, uri: str, *, may_exist: bool = True) -> Attachment:
        with self.faults.guard("attach"), self._lock:
            wanted = Attachment(function_id, volume_id, uri)
            existing = existing_attachment("storage.attach", self._attachments.values(), wanted, may_exist)
            if existing is not None:
                return existing
            self._attachments[volume_id] = wanted
            return wanted

    def detach(self, function_id: str, volume_id: str, *, if_exists: bool = True) -> None:
        with self.faults.guard("detach"), self._lock:
            existing = self._attachments.get(volume_id)
            if existing is None or existing.function_id != function_id:
                if not if_exists:
                    raise DriverError(f"storage.detach: volume '{volume_id}' is not attached to "
                                      f"function '{function_id}'")
                return
            del self._attachments[volume_id]

    def list(self) -> list[Attachment]:
        with self.faults.guard("list"), self._lock:
            return sorted(self._attachments.values(), key=lambda a: a.volume_id)
