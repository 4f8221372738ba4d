"""Volumes as raw, sparse files under one directory (`$DPUSTACK_HOME/volumes`), handed to agents as `file://` URIs.

::

    volumes/<volume_id>.img          a volume
    volumes/<snapshot_id>.snap       a snapshot: a sparse copy of the volume's file when it was taken
    volume-exports/<attachment_id>   an export: the id of the volume that attachment is served
    <any of these>.part              being written; never complete

Data is written to `<name>.part`, flushed, and renamed (`storage.files`), so
a final name always holds complete data. Images in a format other than raw
are converted by qemu-img. Every volume is a whole copy, so there is
nothing to flatten; an export is the file itself, so nothing is started or
stopped, but the backend records it because it cannot snapshot a file that
a DPU may be writing.
"""

from __future__ import annotations

from pathlib import Path

from dpustack.controller.storage import files, qemu_img
from dpustack.controller.volumebackend.base import GiB, ImageSource, VolumeBackend, image_path
from dpustack.errors import Conflict, DriverError, InvalidInput, NotFound


def _reason(exc: OSError | qemu_img.QemuImgError) -> str:
    return exc.message if isinstance(exc, qemu_img.QemuImgError) else exc.strerror or str(exc)


class FileVolumeBackend(VolumeBackend):
    """Volume files in `volumes_dir`, filled from the image files in `images_dir`."""

    name = "files"

    def __init__(self, images_dir: Path, volumes_dir: Path, exports_dir: Path | None = None) -> None:
        self.images_dir = images_dir
        self.volumes_dir = volumes_dir
        self.exports_dir = exports_dir or volumes_dir.with_name("volume-exports")

    def path(self, volume_id: str) -> Path:
        return self.volumes_dir / f"{volume_id}.img"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.volumes_dir / f"{snapshot_id}.snap"

    def export_path(self, attachment_id: str) -> Path:
        return self.exports_dir / attachment_id

    def _existing(self, volume_id: str) -> Path:
        path = self.path(volume_id)
        if not path.exists():
            raise NotFound(f"volume {volume_id} has no data", field="volume")
        return path

    def _attachments(self, volume_id: str) -> list[str]:
        if not self.exports_dir.is_dir():
            return []
        return sorted(p.name for p in self.exports_dir.iterdir()
                      if p.suffix != files.PARTIAL_SUFFIX and p.read_text() == volume_id)

    def create(self, volume_id: str, size: int, image: ImageSource | None = None, *,
               snapshot_id: str | None = None) -> None:
        if image is not None and snapshot_id is not None:
            raise InvalidInput("a volume is made from an image or from a snapshot, not both", field="snapshot")
        target = self.path(volume_id)
        partial = files.partial_path(target)
        partial.unlink(missing_ok=True)
        try:
            if snapshot_id is not None:
                files.sparse_copy(self.snapshot_path(snapshot_id), partial)
            elif image is None:
                partial.touch()
            elif image.disk_format == "raw":
                files.sparse_copy(image_path(self.images_dir, image.image_id), partial)
            else:  # volumes are raw files: other formats are converted
                qemu_img.convert_to_raw(image_path(self.images_dir, image.image_id), image.disk_format, partial)
            if partial.stat().st_size > size * GiB:
                raise InvalidInput(f"cannot create a {size} GiB volume: its source holds "
                                   f"{partial.stat().st_size} bytes", field="size")
            with open(partial, "ab") as handle:
                handle.truncate(size * GiB)  # sparse: costs no disk until written
            files.publish(partial, target)
        except (OSError, qemu_img.QemuImgError) as exc:
            partial.unlink(missing_ok=True)
            raise InvalidInput(f"cannot create a {size} GiB volume: {_reason(exc)}", field="size") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def delete(self, volume_id: str) -> None:
        for attachment_id in self._attachments(volume_id):
            files.remove(self.export_path(attachment_id))
        files.remove(self.path(volume_id))

    def extend(self, volume_id: str, size: int) -> None:
        path = self._existing(volume_id)
        shows = path.stat().st_size
        if size * GiB < shows:
            raise InvalidInput(f"volume {volume_id} holds {shows} bytes; it cannot shrink to {size} GiB",
                               field="size")
        with open(path, "r+b") as handle:
            handle.truncate(size * GiB)

    def export(self, volume_id: str, attachment_id: str) -> str:
        path = self._existing(volume_id)
        record = self.export_path(attachment_id)
        self.exports_dir.mkdir(exist_ok=True)
        partial = files.partial_path(record)
        partial.write_text(volume_id)
        files.publish(partial, record)
        return path.as_uri()

    def unexport(self, attachment_id: str) -> None:
        files.remove(self.export_path(attachment_id))

    def served(self) -> set[str]:
        if not self.exports_dir.is_dir():
            return set()
        return {p.name for p in self.exports_dir.iterdir() if p.suffix != files.PARTIAL_SUFFIX}

    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        source = self._existing(volume_id)
        target = self.snapshot_path(snapshot_id)
        if target.exists():
            return
        if attachments := self._attachments(volume_id):
            raise Conflict(f"volume {volume_id} is exported ({', '.join(attachments)}); the files backend "
                           "snapshots only volumes that no DPU uses", field="volume")
        partial = files.partial_path(target)
        try:
            files.sparse_copy(source, partial)
            files.publish(partial, target)
        except (OSError, qemu_img.QemuImgError) as exc:
            partial.unlink(missing_ok=True)
            raise DriverError(f"cannot snapshot volume {volume_id}: {_reason(exc)}") from exc

    def delete_snapshot(self, snapshot_id: str) -> None:
        files.remove(self.snapshot_path(snapshot_id))

    def flatten(self, volume_id: str) -> None:
        """Nothing to do: every volume file is a whole copy already."""
