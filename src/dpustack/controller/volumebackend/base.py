"""Where volumes' data really lives: the volume backend interface.

The controller's services keep a volume's record; a backend keeps its data
and tells the agent where to find it. A backend's `create` is all or
nothing: when it returns, the data is complete; if it is interrupted (an
error, a crash), at most partial data is left, which `create` run again
replaces and `delete` removes. So the services can mark a volume complete
as soon as `create` returns, and a resumed workflow can simply create again.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from dpustack.db.models import Image

GiB = 1 << 30  # volume sizes are whole GiB


@dataclass(frozen=True)
class ImageSource:
    """The image a volume is filled from, as plain values (usable outside a database session)."""

    image_id: str
    disk_format: str

    @classmethod
    def of(cls, image: Image | None) -> "ImageSource | None":
        return None if image is None else cls(image.id, image.disk_format)


class VolumeBackend(abc.ABC):
    """One implementation per storage technology."""

    name = "abstract"

    @abc.abstractmethod
    def create(self, volume_id: str, size: int, image: ImageSource | None = None) -> None:
        """Write the volume's data: the disk of `image` (none: nothing), then zeros up to `size` GiB.

        Idempotent: data left by an earlier, interrupted attempt is replaced.
        Raises InvalidInput (field `size`) when the data cannot be written.
        """

    @abc.abstractmethod
    def delete(self, volume_id: str) -> None:
        """Remove the volume's data, complete or partial; none is fine."""

    @abc.abstractmethod
    def uri(self, volume_id: str) -> str:
        """Where the agent finds the volume, to bind it to a storage function on the DPU."""
