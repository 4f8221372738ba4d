"""Where volumes' data lives: the `VolumeBackend` interface (base) and its implementations, chosen here."""

from __future__ import annotations

from dpustack.controller.settings import Settings, nbd_address
from dpustack.controller.storage.qsd_node import StorageNode
from dpustack.controller.volumebackend.base import ExportsLost, GiB, ImageSource, VolumeBackend
from dpustack.controller.volumebackend.files import FileVolumeBackend
from dpustack.controller.volumebackend.qcow2 import Qcow2VolumeBackend

__all__ = ["ExportsLost", "FileVolumeBackend", "GiB", "ImageSource", "Qcow2VolumeBackend", "VolumeBackend",
           "volume_backend"]


def volume_backend(settings: Settings) -> VolumeBackend:
    """The backend DPUSTACK_VOLUME_BACKEND names: files in the controller's home, or the qcow2 storage pool
    served by the storage node's daemon (the settings were checked to name its sockets)."""
    if settings.volume_backend == "qcow2":
        assert settings.storage_qmp is not None
        host, port = nbd_address(settings.storage_nbd)
        return Qcow2VolumeBackend(settings.images_dir, settings.storage_pool,
                                  StorageNode(settings.storage_qmp, host, port))
    return FileVolumeBackend(settings.images_dir, settings.volumes_dir)
