"""A volume backend for controller tests: the real files backend (`FileVolumeBackend`), recording every
call and able to fail on demand.

Every method of the `VolumeBackend` interface is the files backend's own, so the controller tests see
what that backend really does: `file://` exports (what the memory storage driver of the in-process
agents accepts), snapshots as sparse copies, and the refusal to snapshot a volume that is exported.
`calls` lists every call that changes something, in order (queries such as `served` are not
recorded); `exports` says which attachments are served now (from the backend's export records);
`arm` makes the next call of a method fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpustack.controller.storage import files
from dpustack.controller.volumebackend import FileVolumeBackend, ImageSource


class RecordingVolumeBackend(FileVolumeBackend):
    name = "recording-files"

    def __init__(self, images_dir: Path, volumes_dir: Path) -> None:
        super().__init__(images_dir, volumes_dir)
        self.calls: list[tuple[Any, ...]] = []
        self._armed: dict[str, BaseException] = {}

    @property
    def exports(self) -> dict[str, str]:
        """attachment id -> volume id, for every export served now."""
        return {attachment_id: self.export_path(attachment_id).read_text() for attachment_id in sorted(self.served())}

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

    # -- the interface: recorded, then the files backend's ----------------------------
    def create(self, volume_id: str, size: int, image: ImageSource | None = None, *,
               snapshot_id: str | None = None) -> None:
        self._call("create", volume_id, size, image.image_id if image else None, snapshot_id)
        super().create(volume_id, size, image, snapshot_id=snapshot_id)

    def delete(self, volume_id: str) -> None:
        self._call("delete", volume_id)
        super().delete(volume_id)

    def extend(self, volume_id: str, size: int) -> None:
        self._call("extend", volume_id, size)
        super().extend(volume_id, size)

    def export(self, volume_id: str, attachment_id: str) -> str:
        self._call("export", volume_id, attachment_id)
        return super().export(volume_id, attachment_id)

    def unexport(self, attachment_id: str) -> None:
        self._call("unexport", attachment_id)
        super().unexport(attachment_id)

    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        self._call("snapshot", volume_id, snapshot_id)
        super().snapshot(volume_id, snapshot_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("delete_snapshot", snapshot_id)
        super().delete_snapshot(snapshot_id)

    def flatten(self, volume_id: str) -> None:
        self._call("flatten", volume_id)
        super().flatten(volume_id)
