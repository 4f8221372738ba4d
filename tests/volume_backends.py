"""A volume backend for controller tests: volume files as the files backend keeps them, with every
method of the `VolumeBackend` interface, recording what it serves and able to fail on demand.

Exports are `file://` URIs of the volume files (what the memory storage driver of the in-process
agents accepts); snapshots are copies of a volume's file, and a volume from a snapshot a copy of it.
`exports` says which attachments are served now, `calls` every call made, in order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dpustack.controller.storage import files
from dpustack.controller.volumebackend import FileVolumeBackend, GiB, ImageSource


class RecordingVolumeBackend(FileVolumeBackend):
    name = "recording-files"

    def __init__(self, images_dir: Path, volumes_dir: Path, snapshots_dir: Path) -> None:
        super().__init__(images_dir, volumes_dir)
        self.snapshots_dir = snapshots_dir
        snapshots_dir.mkdir(parents=True, exist_ok=True)
        self.exports: dict[str, str] = {}  # attachment id -> volume id
        self.calls: list[tuple[Any, ...]] = []
        self._armed: dict[str, BaseException] = {}

    def arm(self, method: str, error: BaseException) -> None:
        """The next call of `method` raises `error`; a create first writes part of the volume's data,
        as an interrupted copy leaves it."""
        self._armed[method] = error

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        if (error := self._armed.pop(method, None)) is not None:
            if method == "create":
                files.partial_path(self.path(args[0])).write_bytes(b"half of the data")
            raise error

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        """Copy a sparse file's data extents only (volume files are mostly holes)."""
        with source.open("rb") as src, target.open("wb") as dst:
            offset, end_of_file = 0, os.fstat(src.fileno()).st_size
            while offset < end_of_file:
                try:
                    start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole is left
                    break
                offset = os.lseek(src.fileno(), start, os.SEEK_HOLE)
                src.seek(start)
                dst.seek(start)
                dst.write(src.read(offset - start))
            dst.truncate(end_of_file)

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / f"{snapshot_id}.img"

    # -- the interface ---------------------------------------------------------------
    def create(self, volume_id: str, size: int, image: ImageSource | None = None, *,
               snapshot_id: str | None = None) -> None:
        self._call("create", volume_id, size, image.image_id if image else None, snapshot_id)
        if snapshot_id is None:
            super().create(volume_id, size, image)
            return
        partial = files.partial_path(self.path(volume_id))
        self._copy(self.snapshot_path(snapshot_id), partial)
        with open(partial, "ab") as handle:
            handle.truncate(size * GiB)
        files.publish(partial, self.path(volume_id))

    def delete(self, volume_id: str) -> None:
        self._call("delete", volume_id)
        super().delete(volume_id)

    def extend(self, volume_id: str, size: int) -> None:
        self._call("extend", volume_id, size)
        with open(self.path(volume_id), "ab") as handle:
            handle.truncate(size * GiB)

    def export(self, volume_id: str, attachment_id: str) -> str:
        self._call("export", volume_id, attachment_id)
        self.exports[attachment_id] = volume_id
        return self.path(volume_id).as_uri()

    def unexport(self, attachment_id: str) -> None:
        self._call("unexport", attachment_id)
        self.exports.pop(attachment_id, None)

    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        self._call("snapshot", volume_id, snapshot_id)
        partial = files.partial_path(self.snapshot_path(snapshot_id))
        self._copy(self.path(volume_id), partial)
        files.publish(partial, self.snapshot_path(snapshot_id))

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("delete_snapshot", snapshot_id)
        files.remove(self.snapshot_path(snapshot_id))

    def flatten(self, volume_id: str) -> None:
        self._call("flatten", volume_id)  # the files are whole copies already
