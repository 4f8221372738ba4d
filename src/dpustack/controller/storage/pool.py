"""The qcow2 storage pool on disk: a directory per volume with numbered layers and an index.

::

    POOL/volumes/<volume_id>/index.json       the volume's truth (below), replaced whole by a rename
    POOL/volumes/<volume_id>/<n>.qcow2        layer n of the volume
    POOL/volumes/<volume_id>/<n>.qcow2.part   a layer being written; never part of the volume
    POOL/volumes/<volume_id>.lock             serializes the work on one volume (flock)
    POOL/snapshots/<snapshot_id>              the id of the volume that holds the snapshot

    index.json = {"layers": [0, 2, 3],                        bottom first; the last is the active layer
                  "base": {"file": PATH, "format": "raw"},     what layer 0 rests on, or null
                  "snapshots": {"<snapshot_id>": 2},           layers that are snapshots
                  "pending": {"snapshot": ID, "layer": 4}}     a live snapshot under way, or null

Each layer is a qcow2 overlay on the layer before it; the first rests on
`base` (an image file, or a layer of another volume that is a snapshot) or
on nothing. Taking a snapshot freezes the active layer and puts a new
overlay on top of it, which becomes the active layer; a snapshot layer is
never written again, so a volume made from it can rest on it.

Crash rule: a volume exists once its index does, and the index only ever
names complete layers: a layer is written under `.part` and renamed (or
created by the storage daemon at a number the index does not list yet)
before an index naming it replaces the old one. So a kill -9 anywhere
leaves the old index or the new one, plus at most unlisted files, which
`sweep` removes on the next change. A live snapshot is the one step the
storage daemon takes on its own: the index records it as `pending` first,
and whoever reads the index next settles it from what the daemon serves.
A snapshot id file without the volume's index listing the snapshot is a
leftover too: that snapshot does not exist.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dpustack.controller.storage import files
from dpustack.errors import DpustackError, InvalidInput

INDEX = "index.json"
LAYER_SUFFIX = ".qcow2"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LAYER = re.compile(r"(\d+)\.qcow2")


def check_id(value: str, *, field: str) -> str:
    """`value` if it can name a file of the pool (letters, digits, `_.-`); InvalidInput naming `field` if not."""
    if not _ID.fullmatch(value):
        raise InvalidInput(f"{field} id {value!r} cannot name storage: use letters, digits and _.-", field=field)
    return value


@dataclass(frozen=True)
class Base:
    """The file a volume's bottom layer rests on, and its format."""

    file: Path
    format: str  # "raw" | "qcow2"


@dataclass(frozen=True)
class Pending:
    """A live snapshot asked of the storage daemon: `snapshot` is to become the layer below `layer`."""

    snapshot: str
    layer: int


@dataclass(frozen=True)
class VolumeIndex:
    """What one volume is made of (see the module docstring)."""

    layers: tuple[int, ...]
    base: Base | None = None
    snapshots: dict[str, int] = field(default_factory=dict)
    pending: Pending | None = None

    @property
    def active(self) -> int:
        return self.layers[-1]

    def with_snapshot(self, snapshot_id: str, new_layer: int) -> "VolumeIndex":
        """The active layer becomes snapshot `snapshot_id`; `new_layer` on top of it becomes the active one."""
        return replace(self, layers=(*self.layers, new_layer), snapshots={**self.snapshots, snapshot_id: self.active},
                       pending=None)

    def with_pending(self, snapshot_id: str, new_layer: int) -> "VolumeIndex":
        return replace(self, pending=Pending(snapshot_id, new_layer))

    def without_pending(self) -> "VolumeIndex":
        return replace(self, pending=None)

    def without_snapshot(self, snapshot_id: str) -> "VolumeIndex":
        """The snapshot's layer merged into the one above it: gone from the chain."""
        layer = self.snapshots[snapshot_id]
        return replace(self, layers=tuple(n for n in self.layers if n != layer),
                       snapshots={s: n for s, n in self.snapshots.items() if s != snapshot_id})

    def flattened(self) -> "VolumeIndex":
        return replace(self, base=None)

    def below(self, layer: int) -> int | None:
        """The layer under `layer` in the chain (None: the bottom one, which rests on `base`)."""
        position = self.layers.index(layer)
        return self.layers[position - 1] if position else None

    def above(self, layer: int) -> int:
        return self.layers[self.layers.index(layer) + 1]

    def to_json(self) -> dict[str, Any]:
        return {"layers": list(self.layers),
                "base": None if self.base is None else {"file": str(self.base.file), "format": self.base.format},
                "snapshots": dict(self.snapshots),
                "pending": None if self.pending is None else {"snapshot": self.pending.snapshot,
                                                              "layer": self.pending.layer}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VolumeIndex":
        base, pending = data.get("base"), data.get("pending")
        layers = tuple(int(n) for n in data["layers"])
        if not layers:
            raise ValueError("no layers")
        return cls(layers=layers,
                   base=None if base is None else Base(Path(base["file"]), str(base["format"])),
                   snapshots={str(s): int(n) for s, n in data.get("snapshots", {}).items()},
                   pending=None if pending is None else Pending(str(pending["snapshot"]), int(pending["layer"])))


class VolumePool:
    """The directories of the pool under `root`, and the atomic changes to them."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()  # layers name their backing files, and the daemon opens them, by these paths
        self.volumes = self.root / "volumes"
        self.snapshots = self.root / "snapshots"
        self.volumes.mkdir(parents=True, exist_ok=True)
        self.snapshots.mkdir(exist_ok=True)

    def directory(self, volume_id: str) -> Path:
        return self.volumes / check_id(volume_id, field="volume")

    def layer(self, volume_id: str, number: int) -> Path:
        return self.directory(volume_id) / f"{number}{LAYER_SUFFIX}"

    @contextmanager
    def locked(self, volume_id: str) -> Iterator[None]:
        """Hold the volume's lock: one change at a time per volume, across threads and processes."""
        fd = os.open(self.volumes / f"{check_id(volume_id, field='volume')}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- the index --------------------------------------------------------

    def read(self, volume_id: str) -> VolumeIndex | None:
        """The volume's index; None when the volume does not exist (no data, or only partial data)."""
        path = self.directory(volume_id) / INDEX
        try:
            return VolumeIndex.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise DpustackError(f"the storage pool's index of volume {volume_id} is damaged ({path}): {exc}") from exc

    def write(self, volume_id: str, index: VolumeIndex) -> None:
        """Replace the volume's index in one step (flushed, then renamed)."""
        directory = self.directory(volume_id)
        final = directory / INDEX
        partial = files.partial_path(final)
        partial.write_text(json.dumps(index.to_json()))
        files.publish(partial, final)

    def start(self, volume_id: str) -> Path:
        """An empty directory for a new volume (anything there before is removed); returns it."""
        directory = self.directory(volume_id)
        self._remove_tree(directory)
        directory.mkdir()
        files.fsync_dir(self.volumes)
        return directory

    def remove(self, volume_id: str) -> None:
        """Remove the volume: its index first (so it no longer exists), then its files."""
        self._remove_tree(self.directory(volume_id))
        # Held by the caller; a waiter would lock a removed file, but the services never queue
        # work on a volume they delete.
        (self.volumes / f"{volume_id}.lock").unlink(missing_ok=True)

    def _remove_tree(self, directory: Path) -> None:
        """Remove a volume's directory, its index first, so an interrupted removal leaves no volume."""
        if directory.exists():
            (directory / INDEX).unlink(missing_ok=True)
            shutil.rmtree(directory)
            files.fsync_dir(self.volumes)

    # -- layers -----------------------------------------------------------

    def _numbered(self, volume_id: str) -> dict[int, Path]:
        found: dict[int, Path] = {}
        for path in self.directory(volume_id).iterdir():
            match = _LAYER.fullmatch(path.name)
            if match:
                found[int(match.group(1))] = path
        return found

    def next_layer(self, volume_id: str, index: VolumeIndex) -> int:
        """A layer number no file of the volume has, listed or not."""
        used = set(index.layers) | set(self._numbered(volume_id))
        if index.pending is not None:
            used.add(index.pending.layer)
        return max(used) + 1

    def sweep(self, volume_id: str, index: VolumeIndex) -> None:
        """Remove what interrupted changes left: partial files and layers the index does not name."""
        keep = set(index.layers) | ({index.pending.layer} if index.pending else set())
        for number, path in self._numbered(volume_id).items():
            if number not in keep:
                path.unlink()
        for path in self.directory(volume_id).glob(f"*{files.PARTIAL_SUFFIX}"):
            path.unlink()

    # -- snapshots --------------------------------------------------------

    def point_snapshot(self, snapshot_id: str, volume_id: str) -> None:
        """Record that `volume_id` holds snapshot `snapshot_id` (before the volume's index lists it)."""
        final = self.snapshots / check_id(snapshot_id, field="snapshot")
        partial = files.partial_path(final)
        partial.write_text(volume_id)
        files.publish(partial, final)

    def snapshot_holder(self, snapshot_id: str) -> str | None:
        """The volume that holds snapshot `snapshot_id`, if its id file is there (the index decides)."""
        try:
            return (self.snapshots / check_id(snapshot_id, field="snapshot")).read_text().strip() or None
        except FileNotFoundError:
            return None

    def forget_snapshot(self, snapshot_id: str) -> None:
        files.remove(self.snapshots / check_id(snapshot_id, field="snapshot"))

    def resting_on(self, file: Path) -> list[str]:
        """The volumes whose bottom layer rests on `file`."""
        found = []
        for directory in sorted(p for p in self.volumes.iterdir() if p.is_dir()):
            index = self.read(directory.name)
            if index is not None and index.base is not None and index.base.file == file:
                found.append(directory.name)
        return found
