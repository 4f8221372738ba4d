"""Where volumes' data really lives: the volume backend interface (the storage service behind volumes).

The controller's services keep a volume's record and its status; a backend
keeps its data, serves it to the DPUs that attach it, and takes its
snapshots. Two implementations ship: `files` (sparse raw files, for fast
tests and single-machine use) and `qcow2` (a storage pool of qcow2 layers in
directories, served over NBD by the storage node's `qemu-storage-daemon`).

Rules every backend keeps:

* All or nothing. When `create` or `snapshot` returns, the data is complete;
  if it is interrupted (an error, a crash, kill -9), at most partial data is
  left, which the same call run again replaces and `delete`/`delete_snapshot`
  removes. So the services can mark a volume `available` as soon as `create`
  returns, and a resumed workflow can simply call again.
* Every call is idempotent: a retry after a crash finishes the work or
  finds it done.
* A snapshot taken while the volume is exported holds exactly the writes
  the backend acknowledged before it, and the export stays up.
* Refusals are `Conflict` (busy, in use) or `InvalidInput` naming the field;
  a storage daemon that fails is a `DriverError` with its reason.

Where production storage plugs in (one subclass each, chosen in
`volumebackend.volume_backend`):

* **Ceph RBD.** `create` = `rbd create` (empty) or `rbd clone` of a protected
  snapshot of the image's RBD image (copy-on-write) or of the volume's
  snapshot, then `rbd resize`; `export` returns an `rbd:POOL/IMAGE` URI that
  the DPU's storage driver opens with QEMU's `rbd` block driver (librbd
  talks to the OSDs directly, so no export is started; `unexport` blocklists
  the attachment's client if the DPU is gone); `snapshot` = `rbd
  snap create` (crash-consistent while clients write) + `rbd snap protect`;
  `delete_snapshot` = `rbd snap unprotect` + `rbd snap rm`, refused while
  `rbd children` lists clones; `flatten` = `rbd flatten` (live); `extend` =
  `rbd resize` (clients watching the header see the new size at once);
  `delete` = `rbd rm`.
* **An NVMe-oF target** (Linux `nvmet` through configfs, or SPDK's
  `nvmf_tgt` over JSON-RPC) in front of thin logical volumes (LVM thin, or
  SPDK lvols): `create` = `lvcreate --thin` / `bdev_lvol_create`, a clone of
  a snapshot = `lvcreate -s` / `bdev_lvol_clone`; `export` = a subsystem (or
  a namespace in one) with the volume as namespace, the DPU's host NQN
  allowed (`nvmf_subsystem_add_ns`, `nvmf_subsystem_add_host`), returning
  `nvme+tcp://ADDR:4420/<subsystem NQN>`; `unexport` removes the host and the
  namespace; `snapshot` = `bdev_lvol_snapshot` (live); `flatten` =
  `bdev_lvol_inflate`; `extend` = `bdev_lvol_resize` (the target raises a
  namespace-attribute-changed event, so the host sees the size live);
  `delete_snapshot`/`delete` = `bdev_lvol_delete`, refused while clones
  depend on it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from dpustack.db.models import Image
from dpustack.errors import DriverError

GiB = 1 << 30  # volume sizes are whole GiB


@dataclass(frozen=True)
class ImageSource:
    """The image a volume is filled from, as plain values (usable outside a database session)."""

    image_id: str
    disk_format: str  # "raw" | "qcow2"

    @classmethod
    def of(cls, image: Image | None) -> "ImageSource | None":
        return None if image is None else cls(image.id, image.disk_format)


class ExportsLost(DriverError):
    """The change asked for was made, but the volume is no longer served to some of its attachments
    (exporting each again repairs it)."""


def image_path(images_dir: Path, image_id: str) -> Path:
    """Where an image's bytes are kept: ``<images_dir>/<image id>`` (the services write it, backends read it)."""
    return images_dir / image_id


class VolumeBackend(abc.ABC):
    """One implementation per storage technology."""

    name = "abstract"

    @abc.abstractmethod
    def create(self, volume_id: str, size: int, image: ImageSource | None = None, *,
               snapshot_id: str | None = None) -> None:
        """Write a volume of `size` GiB: empty, copy-on-write on `image`, or on snapshot `snapshot_id`.

        All or nothing; idempotent: data left by an earlier, interrupted
        attempt is replaced. Raises InvalidInput (field `size`) when the data
        cannot be written or the source does not fit, (field `snapshot`) when
        both an image and a snapshot are given, Conflict (field `volume`) when
        the volume exists and is exported or has snapshots.
        """

    @abc.abstractmethod
    def delete(self, volume_id: str) -> None:
        """Remove the volume's data, complete or partial; none is fine.

        The service refuses first while the volume is attached or has
        snapshots; the backend refuses too (Conflict, field `volume`) rather
        than remove data something still uses.
        """

    @abc.abstractmethod
    def extend(self, volume_id: str, size: int) -> None:
        """Grow the volume to `size` GiB (the same size: nothing to do); done on the storage node when exported.

        InvalidInput (field `size`) when `size` is smaller than the volume; ExportsLost when it grew
        but an export it had to stop for the resize could not be put back.
        """

    @abc.abstractmethod
    def export(self, volume_id: str, attachment_id: str) -> str:
        """Serve the volume for one attachment and return the URI the DPU's storage driver opens.

        One export per attachment, named after it (qcow2: `nbd://HOST:PORT/<attachment_id>`;
        files: the volume file's `file://` URI). Idempotent.
        """

    @abc.abstractmethod
    def unexport(self, attachment_id: str) -> None:
        """Stop serving that attachment; an unknown one is fine."""

    @abc.abstractmethod
    def served(self) -> set[str]:
        """The attachments served now (their ids). A DriverError when the storage cannot tell, e.g. its
        daemon does not answer."""

    @abc.abstractmethod
    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        """Take a point-in-time copy of the volume; afterwards `snapshot_id` is a source for `create`.

        Live when the volume is exported (the export stays up and the
        snapshot holds exactly the writes acknowledged before it); all or
        nothing; idempotent (an existing `snapshot_id` is kept).
        """

    @abc.abstractmethod
    def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot's data; none is fine.

        The service refuses while volumes are made from it; the backend
        refuses too (Conflict, field `snapshot`) while a volume's data still
        rests on it.
        """

    @abc.abstractmethod
    def flatten(self, volume_id: str) -> None:
        """Make the volume independent of its image or snapshot (copy the shared data in); live when exported.

        Afterwards the image or snapshot may be deleted.
        """
