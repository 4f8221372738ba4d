"""Where volumes' data lives: the `VolumeBackend` interface (base) and its implementations, chosen here."""

from __future__ import annotations

from dpustack.controller.settings import Settings
from dpustack.controller.volumebackend.base import GiB, ImageSource, VolumeBackend
from dpustack.controller.volumebackend.files import FileVolumeBackend

__all__ = ["FileVolumeBackend", "GiB", "ImageSource", "VolumeBackend", "volume_backend"]


def volume_backend(settings: Settings) -> VolumeBackend:
    """The backend the controller keeps volumes with: today always files in its home."""
    return FileVolumeBackend(settings.images_dir, settings.volumes_dir)
