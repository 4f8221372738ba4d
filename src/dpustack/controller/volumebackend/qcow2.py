"""Volumes as chains of qcow2 layers in a storage pool, served over NBD by the storage node's qemu-storage-daemon.

Images stay where uploads put them (`images_dir`); a volume made from one
is a qcow2 overlay on the image file (copy-on-write), one made from a
snapshot an overlay on the snapshot's layer. The pool's layout and its
crash rule are `storage.pool`'s.

A volume is *live* while the daemon holds its block graph, which it does
while the volume has exports (one writable NBD export per attachment,
named after the attachment, `nbd://HOST:PORT/<attachment_id>`). Live, a
snapshot, an extend, a flatten and the merge of a deleted snapshot are done
by the daemon (`blockdev-snapshot`, `block_resize`, `block-stream`), so
they see every write it acknowledged; otherwise qemu-img does them on the
files, whose image locks keep it off files a daemon holds. When no daemon
answers on the QMP socket, no volume is live.

The daemon's names: a volume's nodes are `<key>-<layer number>` and
`<key>-b` (its base), `<key>` being a digest of the volume id (node names
have at most 31 characters); an attachment's export is `att-<attachment_id>`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dpustack.controller.storage import files, qemu_img
from dpustack.controller.storage.pool import Base, VolumeIndex, VolumePool, check_id
from dpustack.controller.storage.qsd_node import BlockNode, Refused, StorageNode, Unreachable
from dpustack.controller.volumebackend.base import ExportsLost, GiB, ImageSource, VolumeBackend, image_path
from dpustack.errors import Conflict, DriverError, InvalidInput, NotFound

EXPORT_PREFIX = "att-"


def node_key(volume_id: str) -> str:
    """The prefix of the daemon's node names for one volume."""
    return "v" + hashlib.blake2b(volume_id.encode(), digest_size=10).hexdigest()


def layer_node(volume_id: str, layer: int) -> str:
    return f"{node_key(volume_id)}-{layer}"


def base_node(volume_id: str) -> str:
    return f"{node_key(volume_id)}-b"


def export_id(attachment_id: str) -> str:
    return EXPORT_PREFIX + check_id(attachment_id, field="attachment")


def _of_volume(key: str, name: str) -> bool:
    return name.startswith(key + "-")


def _top_layer(key: str, nodes: list[BlockNode]) -> BlockNode | None:
    """The volume's node of the highest layer number: the one its exports serve."""
    layers = [(int(n.name.rsplit("-", 1)[1]), n) for n in nodes
              if _of_volume(key, n.name) and n.name.rsplit("-", 1)[1].isdigit()]
    return max(layers, key=lambda pair: pair[0])[1] if layers else None


def _storage_error(what: str, volume_id: str, exc: qemu_img.QemuImgError | OSError) -> DriverError:
    reason = exc.message if isinstance(exc, qemu_img.QemuImgError) else exc.strerror or str(exc)
    return DriverError(f"cannot {what} volume {volume_id} in the storage pool: {reason}")


class Qcow2VolumeBackend(VolumeBackend):
    """Volumes in the pool at `pool_dir`, on images in `images_dir`, served by the daemon `node`."""

    name = "qcow2"

    def __init__(self, images_dir: Path, pool_dir: Path, node: StorageNode) -> None:
        self.images_dir = images_dir
        self.pool = VolumePool(pool_dir)
        self.node = node

    # -- the volume's index, settled --------------------------------------

    def _read(self, volume_id: str) -> VolumeIndex | None:
        """The volume's index with a pending live snapshot settled and leftovers swept (lock held);
        None when the volume does not exist."""
        index = self.pool.read(volume_id)
        if index is None:
            return None
        index = self._settled(volume_id, index)
        self.pool.sweep(volume_id, index)
        return index

    def _index(self, volume_id: str) -> VolumeIndex:
        index = self._read(volume_id)
        if index is None:
            raise NotFound(f"volume {volume_id} has no data in the storage pool", field="volume")
        return index

    def _settled(self, volume_id: str, index: VolumeIndex) -> VolumeIndex:
        """Decide a live snapshot an interrupted call left pending: taken if the daemon put its new layer
        on top, or (daemon restarted) if the new layer's file is complete; else it never happened."""
        pending = index.pending
        if pending is None:
            return index
        nodes = self._graph(volume_id)
        if nodes:
            # The new layer's node rests on the old active layer once the daemon switched; opened but
            # not switched, it rests on nothing and is closed before its file is swept.
            added = next((n for n in nodes if n.name == layer_node(volume_id, pending.layer)), None)
            taken = added is not None and added.backing_file is not None
            if added is not None and not taken:
                self.node.delete_node(added.name)
        else:
            taken = self._complete(self.pool.layer(volume_id, pending.layer))
        settled = index.with_snapshot(pending.snapshot, pending.layer) if taken else index.without_pending()
        self.pool.write(volume_id, settled)
        return settled

    @staticmethod
    def _complete(layer: Path) -> bool:
        try:
            qemu_img.info(layer, disk_format="qcow2", force_share=True)
        except qemu_img.QemuImgError:
            return False
        return True

    # -- what the daemon holds --------------------------------------------

    def _graph(self, volume_id: str) -> list[BlockNode] | None:
        """The daemon's nodes of the volume; None when no daemon answers."""
        try:
            nodes = self.node.nodes()
        except Unreachable:
            return None
        key = node_key(volume_id)
        return [n for n in nodes if _of_volume(key, n.name)]

    def _live_top(self, volume_id: str) -> str | None:
        """The node the volume's exports serve, or None when it has none (a graph left without exports
        by an interrupted unexport is closed)."""
        nodes = self._graph(volume_id)
        if not nodes:
            return None
        key = node_key(volume_id)
        if not any(_of_volume(key, e.node_name) for e in self.node.exports()):
            self._close_graph(key)
            return None
        top = _top_layer(key, nodes)
        if top is None:
            raise DriverError(f"the storage daemon serves volume {volume_id} without any of its layers")
        return top.name

    def _close_graph(self, key: str) -> None:
        """Delete the volume's nodes the monitor owns, top first (their children go with them)."""
        for _ in range(len(self.node.nodes()) + 1):
            top = _top_layer(key, self.node.nodes())
            if top is None:
                return
            self.node.delete_node(top.name)
        raise DriverError(f"the storage daemon keeps nodes {key}-* open")

    def _drop_node(self, name: str) -> None:
        if any(n.name == name for n in self.node.nodes()):
            self.node.delete_node(name)

    def _chain(self, volume_id: str, index: VolumeIndex) -> dict[str, Any]:
        """`blockdev-add` options of the volume's whole chain, each layer named, active layer on top."""
        below: dict[str, Any] | None = None
        if index.base is not None:
            # A qcow2 base (a snapshot of another volume) opens what it rests on from its own header.
            below = {"driver": index.base.format, "node-name": base_node(volume_id),
                     "file": {"driver": "file", "filename": str(index.base.file)}}
        for layer in index.layers:
            below = {"driver": "qcow2", "node-name": layer_node(volume_id, layer),
                     "file": {"driver": "file", "filename": str(self.pool.layer(volume_id, layer))},
                     "backing": below}
        assert below is not None  # an index has at least one layer
        return below

    # -- VolumeBackend ----------------------------------------------------

    def _source(self, image: ImageSource | None, snapshot_id: str | None) -> Base | None:
        if image is not None and snapshot_id is not None:
            raise InvalidInput("a volume is made from an image or from a snapshot, not both", field="snapshot")
        if image is not None:
            return Base(image_path(self.images_dir, image.image_id).absolute(), image.disk_format)
        if snapshot_id is None:
            return None
        holder = self.pool.snapshot_holder(snapshot_id)
        index = self.pool.read(holder) if holder else None
        if holder is None or index is None or snapshot_id not in index.snapshots:
            raise InvalidInput(f"snapshot {snapshot_id} has no data in the storage pool", field="snapshot")
        return Base(self.pool.layer(holder, index.snapshots[snapshot_id]), "qcow2")

    @staticmethod
    def _check_fits(base: Base, size: int) -> None:
        try:
            shows = qemu_img.info(base.file, disk_format=base.format, force_share=True).virtual_size
        except qemu_img.QemuImgError as exc:
            raise InvalidInput(f"cannot create a {size} GiB volume: {exc.message}", field="size") from exc
        if shows > size * GiB:
            raise InvalidInput(f"cannot create a {size} GiB volume: its source shows a disk of {shows} bytes",
                               field="size")

    def create(self, volume_id: str, size: int, image: ImageSource | None = None, *,
               snapshot_id: str | None = None) -> None:
        base = self._source(image, snapshot_id)
        with self.pool.locked(volume_id):
            old = self.pool.read(volume_id)
            if old is not None and (old.snapshots or self._live_top(volume_id)):
                raise Conflict(f"volume {volume_id} exists with snapshots or exports; it is not made again",
                               field="volume")
            if base is not None:
                self._check_fits(base, size)
            try:
                self.pool.start(volume_id)
                final = self.pool.layer(volume_id, 0)
                partial = files.partial_path(final)
                qemu_img.create_qcow2(partial, size * GiB, backing=base.file if base else None,
                                      backing_format=base.format if base else None)
                files.publish(partial, final)
                self.pool.write(volume_id, VolumeIndex(layers=(0,), base=base))
            except (OSError, qemu_img.QemuImgError) as exc:
                self.pool.remove(volume_id)
                reason = exc.message if isinstance(exc, qemu_img.QemuImgError) else exc.strerror or exc
                raise InvalidInput(f"cannot create a {size} GiB volume: {reason}", field="size") from exc
            except BaseException:
                self.pool.remove(volume_id)
                raise

    def delete(self, volume_id: str) -> None:
        with self.pool.locked(volume_id):
            index = self._read(volume_id)
            if index is not None:
                if index.snapshots:
                    raise Conflict(f"volume {volume_id} has snapshots ({', '.join(sorted(index.snapshots))}); "
                                   "delete them first", field="volume")
            if self._live_top(volume_id):
                raise Conflict(f"volume {volume_id} is exported; unexport it first", field="volume")
            self.pool.remove(volume_id)

    def extend(self, volume_id: str, size: int) -> None:
        wanted = size * GiB
        with self.pool.locked(volume_id):
            index = self._index(volume_id)
            top = self._live_top(volume_id)
            try:
                if top is not None:
                    shows = next(n.virtual_size for n in self.node.nodes() if n.name == top)
                else:
                    shows = qemu_img.info(self.pool.layer(volume_id, index.active), disk_format="qcow2").virtual_size
                if wanted < shows:
                    raise InvalidInput(f"volume {volume_id} shows {shows} bytes; it cannot shrink to {size} GiB",
                                       field="size")
                if wanted == shows:
                    return
                if top is not None:
                    self._resize_live(volume_id, index, top, wanted)
                else:
                    qemu_img.resize(self.pool.layer(volume_id, index.active), wanted)
            except (OSError, qemu_img.QemuImgError) as exc:
                raise _storage_error("extend", volume_id, exc) from exc

    def _resize_live(self, volume_id: str, index: VolumeIndex, top: str, size: int) -> None:
        """`block_resize` on the daemon. Its NBD exports forbid a resize while they exist, so each export
        of the volume is dropped and added again around it, at the same name: the DPU's NBD client
        reconnects (and learns the new size when it opens the export anew). The exports are put back
        whether the resize worked or not; when one cannot be, the error says the volume is not served
        to that attachment (ExportsLost when the resize was done; exporting it again repairs it)."""
        key = node_key(volume_id)
        dropped: list[str] = []
        try:
            for export in [e for e in self.node.exports() if _of_volume(key, e.node_name)]:
                self.node.remove_export(export.id)
                dropped.append(export.id.removeprefix(EXPORT_PREFIX))
            self.node.resize(top, size)
        except BaseException as exc:
            self._put_back(volume_id, index, dropped, failed=exc)
            raise
        self._put_back(volume_id, index, dropped)

    def _put_back(self, volume_id: str, index: VolumeIndex, attachments: list[str], *,
                  failed: BaseException | None = None) -> None:
        """Serve the volume again to each attachment whose export was dropped; every one is tried."""
        lost: dict[str, str] = {}
        for attachment_id in attachments:
            try:
                self._serve(volume_id, index, attachment_id)
            except DriverError as exc:
                lost[attachment_id] = exc.message
        if lost:
            message = (f"volume {volume_id} is no longer served to attachment(s) {', '.join(lost)}: "
                       f"{'; '.join(sorted(set(lost.values())))}")
            if failed is not None:
                raise DriverError(f"{message} (the resize had failed: {failed})")
            raise ExportsLost(f"{message} (the resize was done)")

    def _serve(self, volume_id: str, index: VolumeIndex, attachment_id: str) -> None:
        """Add the attachment's export of the volume's active layer, adding the volume's graph if the
        daemon does not hold it (or holds a graph an interrupted change left without that layer on top)."""
        key = node_key(volume_id)
        active = layer_node(volume_id, index.active)
        top = _top_layer(key, self.node.nodes())
        if top is not None and top.name != active:
            serving = [e.id for e in self.node.exports() if _of_volume(key, e.node_name)]
            if serving:
                raise DriverError(f"the storage daemon serves volume {volume_id} from node {top.name} "
                                  f"({', '.join(serving)}), not from its active layer {active}")
            self._close_graph(key)
            top = None
        if top is None:
            self.node.add_node(self._chain(volume_id, index))
        self.node.add_export(export_id(attachment_id), active, attachment_id)

    def export(self, volume_id: str, attachment_id: str) -> str:
        wanted = export_id(attachment_id)
        key = node_key(volume_id)
        with self.pool.locked(volume_id):
            index = self._index(volume_id)
            current = next((e for e in self.node.exports() if e.id == wanted), None)
            if current is not None:
                if not _of_volume(key, current.node_name):
                    raise Conflict(f"attachment {attachment_id} is served for another volume", field="attachment")
                return self.node.uri(attachment_id)
            self._serve(volume_id, index, attachment_id)
        return self.node.uri(attachment_id)

    def unexport(self, attachment_id: str) -> None:
        wanted = export_id(attachment_id)
        try:
            current = next((e for e in self.node.exports() if e.id == wanted), None)
        except Unreachable:
            return  # no daemon, no export
        if current is None:
            return
        self.node.remove_export(wanted)
        key = current.node_name.rsplit("-", 1)[0]
        if not any(_of_volume(key, e.node_name) for e in self.node.exports()):
            self._close_graph(key)

    def served(self) -> set[str]:
        return {e.id.removeprefix(EXPORT_PREFIX) for e in self.node.exports() if e.id.startswith(EXPORT_PREFIX)}

    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        check_id(snapshot_id, field="snapshot")
        with self.pool.locked(volume_id):
            index = self._index(volume_id)
            holder = self.pool.snapshot_holder(snapshot_id)
            other = self.pool.read(holder) if holder not in (None, volume_id) else None
            if other is not None and snapshot_id in other.snapshots:
                raise Conflict(f"snapshot {snapshot_id} belongs to volume {holder}", field="snapshot")
            # The id file first: until the index lists the snapshot, it names nothing.
            self.pool.point_snapshot(snapshot_id, volume_id)
            if snapshot_id not in index.snapshots:
                self._take_snapshot(volume_id, snapshot_id, index)

    def _take_snapshot(self, volume_id: str, snapshot_id: str, index: VolumeIndex) -> None:
        new = self.pool.next_layer(volume_id, index)
        top = self._live_top(volume_id)
        if top is None:
            self._new_layer(volume_id, index, new)
        else:
            self._snapshot_live(volume_id, snapshot_id, index, top, new)
        self.pool.write(volume_id, index.with_snapshot(snapshot_id, new))

    def _new_layer(self, volume_id: str, index: VolumeIndex, new: int, size: int | None = None) -> Path:
        """Write layer `new`, an overlay on the active layer. Given the `size`, the overlay only names the
        active layer's file (which the daemon holds) instead of opening it."""
        final = self.pool.layer(volume_id, new)
        partial = files.partial_path(final)
        try:
            qemu_img.create_qcow2(partial, size, backing=self.pool.layer(volume_id, index.active),
                                  open_backing=size is None)
            files.publish(partial, final)
        except (OSError, qemu_img.QemuImgError) as exc:
            partial.unlink(missing_ok=True)
            raise _storage_error("snapshot", volume_id, exc) from exc
        return final

    def _snapshot_live(self, volume_id: str, snapshot_id: str, index: VolumeIndex, top: str, new: int) -> None:
        """The daemon puts layer `new` on top of `top` and serves it; recorded as pending first."""
        pending = index.with_pending(snapshot_id, new)
        self.pool.write(volume_id, pending)
        try:
            size = next(n.virtual_size for n in self.node.nodes() if n.name == top)
            final = self._new_layer(volume_id, index, new, size)
        except DriverError:
            self._drop_pending(volume_id, index, pending)  # the daemon was not asked anything
            raise
        try:
            self.node.snapshot(top, final, layer_node(volume_id, new))
        except Refused:
            self._drop_pending(volume_id, index, pending)  # the daemon said no: nothing switched
            raise
        # Any other failure leaves the snapshot pending: the next call asks the daemon what happened.

    def _drop_pending(self, volume_id: str, index: VolumeIndex, pending: VolumeIndex) -> None:
        self._settled(volume_id, pending)
        self.pool.sweep(volume_id, index)

    def delete_snapshot(self, snapshot_id: str) -> None:
        holder = self.pool.snapshot_holder(snapshot_id)
        if holder is None:
            return
        with self.pool.locked(holder):
            index = self._read(holder)
            if index is None or snapshot_id not in index.snapshots:
                self.pool.forget_snapshot(snapshot_id)
                return
            layer = index.snapshots[snapshot_id]
            file = self.pool.layer(holder, layer)
            resting = self.pool.resting_on(file)
            if resting:
                raise Conflict(f"snapshot {snapshot_id} holds the data of volume(s) {', '.join(resting)}; "
                               "flatten or delete them first", field="snapshot")
            self._merge_away(holder, index, layer)
            self.pool.write(holder, index.without_snapshot(snapshot_id))
            file.unlink(missing_ok=True)
            self.pool.forget_snapshot(snapshot_id)

    def _merge_away(self, volume_id: str, index: VolumeIndex, layer: int) -> None:
        """Copy what `layer` holds into the layer above it and put that one on the layer below."""
        above, below = index.above(layer), index.below(layer)
        top = self._live_top(volume_id)
        if top is not None:
            base = layer_node(volume_id, below) if below is not None else (
                base_node(volume_id) if index.base is not None else None)
            self.node.stream(f"merge-{node_key(volume_id)}", layer_node(volume_id, above), base)
            # still held if the monitor added it (the root the graph was added by, or a live snapshot's layer)
            self._drop_node(layer_node(volume_id, layer))
            return
        if below is not None:
            backing: Base | None = Base(self.pool.layer(volume_id, below), "qcow2")
        else:
            backing = index.base
        try:
            qemu_img.rebase(self.pool.layer(volume_id, above), backing.file if backing else None,
                            backing_format=backing.format if backing else "qcow2")
        except qemu_img.QemuImgError as exc:
            raise _storage_error("merge a snapshot of", volume_id, exc) from exc

    def flatten(self, volume_id: str) -> None:
        with self.pool.locked(volume_id):
            index = self._index(volume_id)
            if index.base is None:
                return
            bottom = index.layers[0]
            top = self._live_top(volume_id)
            if top is not None:
                self.node.stream(f"flatten-{node_key(volume_id)}", layer_node(volume_id, bottom))
            else:
                try:
                    qemu_img.rebase(self.pool.layer(volume_id, bottom), None)
                except qemu_img.QemuImgError as exc:
                    raise _storage_error("flatten", volume_id, exc) from exc
            self.pool.write(volume_id, index.flattened())
