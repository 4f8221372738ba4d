"""Volumes as raw, sparse files under one directory (`$DPUSTACK_HOME/volumes`), handed to agents as `file://` URIs.

A volume's data is written to `<id>.img.part`, flushed, and renamed to
`<id>.img` (`storage.files`), so the final name always holds complete data.
Images in a format other than raw are converted by qemu-img.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dpustack.controller.services.images import image_path
from dpustack.controller.storage import files, qemu_img
from dpustack.controller.volumebackend.base import GiB, ImageSource, VolumeBackend
from dpustack.errors import InvalidInput


class FileVolumeBackend(VolumeBackend):
    """Volume files in `volumes_dir`, filled from the image files in `images_dir`."""

    name = "files"

    def __init__(self, images_dir: Path, volumes_dir: Path) -> None:
        self.images_dir = images_dir
        self.volumes_dir = volumes_dir

    def path(self, volume_id: str) -> Path:
        return self.volumes_dir / f"{volume_id}.img"

    def uri(self, volume_id: str) -> str:
        return self.path(volume_id).as_uri()

    def create(self, volume_id: str, size: int, image: ImageSource | None = None) -> None:
        target = self.path(volume_id)
        partial = files.partial_path(target)
        partial.unlink(missing_ok=True)
        try:
            if image is None:
                partial.touch()
            elif image.disk_format == "raw":
                shutil.copyfile(image_path(self.images_dir, image.image_id), partial)
            else:  # volumes are raw files: other formats are converted
                qemu_img.convert_to_raw(image_path(self.images_dir, image.image_id), image.disk_format, partial)
            with open(partial, "ab") as handle:
                handle.truncate(size * GiB)  # sparse: costs no disk until written
            files.publish(partial, target)
        except (OSError, qemu_img.QemuImgError) as exc:
            partial.unlink(missing_ok=True)
            reason = exc.message if isinstance(exc, qemu_img.QemuImgError) else exc.strerror or exc
            raise InvalidInput(f"cannot create a {size} GiB volume: {reason}", field="size") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def delete(self, volume_id: str) -> None:
        files.remove(self.path(volume_id))
