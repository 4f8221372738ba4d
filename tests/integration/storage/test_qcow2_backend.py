"""The qcow2 storage service against a real qemu-storage-daemon, real qemu-img and qemu-io as the DPU.

Volumes are qcow2 chains in the pool, copy-on-write on their image; every attachment is an NBD export
of the daemon, and what a client writes through it lands in the volume. Snapshots, extends, flattens
and snapshot deletions happen offline on the files, or live in the daemon while the volume is served.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dpustack.controller.volumebackend import ExportsLost, GiB, ImageSource
from dpustack.controller.volumebackend.qcow2 import layer_node
from dpustack.controller.storage.qsd_node import Refused
from dpustack.errors import Conflict, InvalidInput
from storage_node import NbdClient, qemu_io

MiB = 1 << 20


def _info(path: Path) -> dict:
    done = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def _active(storage, volume_id: str) -> Path:
    pool = storage.backend.pool
    return pool.layer(volume_id, pool.read(volume_id).active)


def _raw_image(storage, image_id: str, pattern: int) -> Path:
    """A 4 MiB raw image whose first MiB is `pattern`."""
    path = storage.images / image_id
    with path.open("wb") as out:
        out.write(bytes([pattern]) * MiB)
        out.truncate(4 * MiB)
    return path


def _pattern(block: int) -> int:
    """The byte block number `block` is written with (never 0, which unwritten blocks read as)."""
    return block % 255 + 1


def _served(storage) -> tuple[list, list]:
    return storage.backend.node.exports(), storage.backend.node.nodes()


def test_an_empty_volume_is_served_over_nbd_and_what_a_client_writes_lands_in_it(storage):
    backend = storage.backend
    backend.create("v1", 1)
    info = _info(_active(storage, "v1"))
    assert info["format"] == "qcow2" and info["virtual-size"] == GiB and "backing-filename" not in info
    uri = backend.export("v1", "a1")
    assert uri == f"nbd://127.0.0.1:{backend.node.nbd_port}/a1"
    assert backend.export("v1", "a1") == uri  # idempotent
    assert backend.served() == {"a1"}
    assert qemu_io(uri, "length").strip() == "1 GiB"
    qemu_io(uri, "write -P 0x5a 1M 64k", "flush")
    backend.unexport("a1")
    backend.unexport("a1")  # unknown: fine
    assert _served(storage) == ([], [])  # nothing left open in the daemon
    assert backend.served() == set()
    qemu_io(str(_active(storage, "v1")), "read -P 0x5a 1M 64k", fmt="qcow2")


@pytest.mark.parametrize("disk_format", ["raw", "qcow2"])
def test_a_volume_from_an_image_is_an_overlay_on_it_that_shows_its_data_and_never_writes_it(storage, disk_format):
    raw = _raw_image(storage, "img", 0x11)
    image = raw
    if disk_format == "qcow2":
        image = storage.images / "img.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    backend = storage.backend
    backend.create("boot", 1, ImageSource(image.name, disk_format))
    info = _info(_active(storage, "boot"))
    assert info["full-backing-filename"] == str(image) and info["backing-filename-format"] == disk_format
    assert info["virtual-size"] == GiB and info["actual-size"] < MiB  # copy-on-write: nothing copied
    before = image.read_bytes()
    uri = backend.export("boot", "a1")
    qemu_io(uri, "read -P 0x11 0 1M", "read -P 0 1M 3M", "write -P 0x22 0 64k", "flush")
    backend.unexport("a1")
    assert image.read_bytes() == before
    qemu_io(str(_active(storage, "boot")), "read -P 0x22 0 64k", "read -P 0x11 64k 960k", fmt="qcow2")


def test_a_source_that_does_not_fit_or_is_missing_is_refused_leaving_nothing(storage):
    image = storage.images / "big"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "2G"], check=True)
    for source in (ImageSource("big", "qcow2"), ImageSource("missing", "raw")):
        with pytest.raises(InvalidInput) as caught:
            storage.backend.create("v1", 1, source)
        assert caught.value.field == "size"
    with pytest.raises(InvalidInput) as caught:
        storage.backend.create("v1", 1, snapshot_id="nothing")
    assert caught.value.field == "snapshot"
    assert storage.backend.pool.read("v1") is None and list(storage.backend.pool.volumes.iterdir()) in ([], [
        storage.backend.pool.volumes / "v1.lock"])


def test_an_offline_snapshot_keeps_its_point_in_time_and_is_the_source_of_a_new_volume(storage):
    _raw_image(storage, "img", 0x11)
    backend = storage.backend
    backend.create("v1", 1, ImageSource("img", "raw"))
    qemu_io(backend.export("v1", "a1"), "write -P 0xaa 0 64k", "flush")
    backend.unexport("a1")
    backend.snapshot("v1", "s1")
    backend.snapshot("v1", "s1")  # idempotent: one snapshot
    assert backend.pool.read("v1").layers == (0, 1)
    qemu_io(backend.export("v1", "a1"), "write -P 0xbb 0 64k", "flush")
    backend.create("r1", 2, snapshot_id="s1")
    assert _info(_active(storage, "r1"))["virtual-size"] == 2 * GiB
    # r1 rests on the snapshot, which rests on the image: all three layers show through.
    qemu_io(backend.export("r1", "a2"), "read -P 0xaa 0 64k", "read -P 0x11 64k 960k")
    qemu_io(backend.node.uri("a1"), "read -P 0xbb 0 64k", "read -P 0x11 64k 960k")


def test_a_live_snapshot_holds_exactly_what_was_written_before_it_and_the_export_stays_up(storage):
    backend = storage.backend
    backend.create("v1", 1)
    with NbdClient(backend.export("v1", "a1")) as dpu:
        dpu.run("write -P 0xaa 0 64k")
        dpu.run("write -P 0xa1 1M 64k")
        backend.snapshot("v1", "s1")
        dpu.run("write -P 0xbb 0 64k")  # the same connection goes on writing
        dpu.run("write -P 0xb2 2M 64k")
        backend.create("r1", 1, snapshot_id="s1")
        qemu_io(backend.export("r1", "a2"), "read -P 0xaa 0 64k", "read -P 0xa1 1M 64k", "read -P 0 2M 64k")
        dpu.run("read -P 0xbb 0 64k")
        dpu.run("read -P 0xa1 1M 64k")
        dpu.run("read -P 0xb2 2M 64k")
    index = backend.pool.read("v1")
    assert index.snapshots == {"s1": 0} and index.active == 1 and index.pending is None
    assert [e.node_name for e in backend.node.exports() if e.id == "att-a1"] == [layer_node("v1", 1)]


def test_a_snapshot_taken_while_a_writer_runs_holds_every_write_acknowledged_before_it_and_none_after(storage):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    issued: dict[int, float] = {}
    acknowledged: dict[int, float] = {}
    started, snapshotted = threading.Event(), threading.Event()

    failed: list[BaseException] = []

    def writer() -> None:
        """Block after block, each its own pattern, until 20 blocks after the snapshot (at most 1,000)."""
        try:
            write_blocks()
        except BaseException as exc:  # reported by the test, not lost in the thread
            failed.append(exc)
            started.set()

    def write_blocks() -> None:
        after_snapshot = 0
        with NbdClient(uri) as dpu:
            for block in range(1000):
                issued[block] = time.monotonic()
                dpu.run(f"write -P {_pattern(block)} {block * 64}k 64k")
                acknowledged[block] = time.monotonic()
                if block == 20:
                    started.set()
                after_snapshot += snapshotted.is_set()
                if after_snapshot > 20:
                    return

    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(10)
    before = time.monotonic()
    backend.snapshot("v1", "s1")
    after = time.monotonic()
    snapshotted.set()
    thread.join(30)
    assert not failed, failed
    written = sorted(acknowledged)
    held = [b for b in written if acknowledged[b] < before]
    later = [b for b in written if issued[b] > after]
    assert len(held) > 20 and len(later) >= 20  # the writer really ran on both sides of the snapshot
    backend.create("r1", 1, snapshot_id="s1")
    checks = [f"read -P {_pattern(b)} {b * 64}k 64k" for b in held] + [f"read -P 0 {b * 64}k 64k" for b in later]
    qemu_io(backend.export("r1", "a2"), *checks)
    qemu_io(uri, *[f"read -P {_pattern(b)} {b * 64}k 64k" for b in written])  # the volume has them all


def test_extend_offline_grows_the_volume_and_keeps_its_data(storage):
    backend = storage.backend
    backend.create("v1", 1)
    qemu_io(backend.export("v1", "a1"), "write -P 0x33 0 64k", "flush")
    backend.unexport("a1")
    backend.extend("v1", 2)
    backend.extend("v1", 2)  # the same size: nothing to do
    assert _info(_active(storage, "v1"))["virtual-size"] == 2 * GiB
    with pytest.raises(InvalidInput) as caught:
        backend.extend("v1", 1)
    assert caught.value.field == "size"
    uri = backend.export("v1", "a1")
    assert qemu_io(uri, "length").strip() == "2 GiB"
    qemu_io(uri, "read -P 0x33 0 64k", "write -P 0x44 1536M 64k", "read -P 0x44 1536M 64k")


def test_extend_while_exported_resizes_in_the_daemon_and_the_next_connection_sees_the_size(storage):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    backend.export("v1", "a2")  # a second attachment of the same volume
    qemu_io(uri, "write -P 0x33 0 64k")
    backend.extend("v1", 3)
    exports, nodes = _served(storage)
    assert sorted(e.id for e in exports) == ["att-a1", "att-a2"]  # both served again, same names
    top = {e.node_name for e in exports}
    assert [n.virtual_size for n in nodes if n.name in top] == [3 * GiB]
    assert qemu_io(uri, "length").strip() == "3 GiB"
    qemu_io(uri, "read -P 0x33 0 64k", "write -P 0x44 2G 64k", "read -P 0x44 2G 64k")
    backend.unexport("a1")
    backend.unexport("a2")
    assert _info(_active(storage, "v1"))["virtual-size"] == 3 * GiB


@pytest.mark.parametrize("live", [False, True], ids=["offline", "live"])
def test_flatten_makes_the_volume_independent_of_its_image(storage, live):
    image = _raw_image(storage, "img", 0x11)
    backend = storage.backend
    backend.create("boot", 1, ImageSource("img", "raw"))
    uri = backend.export("boot", "a1")
    qemu_io(uri, "write -P 0x22 2M 64k", "flush")
    if live:
        with NbdClient(uri) as dpu:
            backend.flatten("boot")
            dpu.run("read -P 0x11 0 1M")
    else:
        backend.unexport("a1")
        backend.flatten("boot")
    backend.unexport("a1")
    assert "backing-filename" not in _info(_active(storage, "boot"))
    assert backend.pool.read("boot").base is None
    image.unlink()
    qemu_io(backend.export("boot", "a1"), "read -P 0x11 0 1M", "read -P 0x22 2M 64k", "read -P 0 3M 64k")


@pytest.mark.parametrize("live", [False, True], ids=["offline", "live"])
def test_a_snapshot_something_rests_on_cannot_be_deleted_and_deleting_it_later_keeps_the_volume(storage, live):
    backend = storage.backend
    backend.create("v1", 1)
    qemu_io(backend.export("v1", "a1"), "write -P 0xaa 0 64k", "write -P 0xa1 1M 64k", "flush")
    backend.snapshot("v1", "s1")
    qemu_io(backend.node.uri("a1"), "write -P 0xbb 0 64k", "flush")
    backend.create("r1", 1, snapshot_id="s1")
    with pytest.raises(Conflict) as caught:
        backend.delete_snapshot("s1")
    assert caught.value.field == "snapshot" and "r1" in caught.value.message
    with pytest.raises(Conflict) as caught:
        backend.delete("v1")
    assert caught.value.field == "volume" and "s1" in caught.value.message
    backend.flatten("r1")
    if not live:
        backend.unexport("a1")
    snapshot_layer = backend.pool.layer("v1", 0)
    backend.delete_snapshot("s1")
    backend.delete_snapshot("s1")  # gone: fine
    assert not snapshot_layer.exists() and backend.pool.read("v1").layers == (1,)
    exports, nodes = _served(storage)
    assert [e.id for e in exports] == (["att-a1"] if live else [])  # merged in the daemon, still served
    assert layer_node("v1", 0) not in {n.name for n in nodes}
    uri = backend.export("v1", "a1")
    qemu_io(uri, "read -P 0xbb 0 64k", "read -P 0xa1 1M 64k")  # the volume kept every byte
    qemu_io(backend.export("r1", "a2"), "read -P 0xaa 0 64k", "read -P 0xa1 1M 64k")
    backend.unexport("a1")
    backend.unexport("a2")
    assert _served(storage) == ([], [])  # the merged layer's node is not left behind either
    assert "backing-filename" not in _info(_active(storage, "v1"))


def test_delete_is_refused_while_exported_and_then_removes_every_file(storage):
    backend = storage.backend
    backend.create("v1", 1)
    backend.export("v1", "a1")
    with pytest.raises(Conflict) as caught:
        backend.delete("v1")
    assert caught.value.field == "volume"
    backend.unexport("a1")
    backend.delete("v1")
    backend.delete("v1")
    assert list(backend.pool.volumes.iterdir()) == []


def test_after_a_kill_9_of_the_storage_daemon_exporting_again_serves_the_same_data(storage):
    backend = storage.backend
    image = _raw_image(storage, "img", 0x11)
    backend.create("v1", 1, ImageSource(image.name, "raw"))
    uri = backend.export("v1", "a1")
    qemu_io(uri, "write -P 0x66 2M 64k", "flush")
    backend.snapshot("v1", "s1")  # live: the daemon's graph has two layers now
    qemu_io(uri, "write -P 0x77 3M 64k", "flush")
    storage.daemon.kill()
    storage.daemon.start()
    assert backend.export("v1", "a1") == uri
    qemu_io(uri, "read -P 0x11 0 1M", "read -P 0x66 2M 64k", "read -P 0x77 3M 64k")
    backend.unexport("a1")
    assert _served(storage) == ([], [])


def test_extend_while_exported_after_a_live_snapshot_keeps_the_volume_served(storage):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    qemu_io(uri, "write -P 0xaa 0 64k")
    backend.snapshot("v1", "s1")  # live: the export now serves the layer the daemon made
    qemu_io(uri, "write -P 0xbb 0 64k")
    backend.extend("v1", 2)
    assert [e.id for e in backend.node.exports()] == ["att-a1"]
    assert qemu_io(uri, "length").strip() == "2 GiB"
    qemu_io(uri, "read -P 0xbb 0 64k", "write -P 0xcc 1536M 64k", "read -P 0xcc 1536M 64k")
    backend.create("r1", 1, snapshot_id="s1")
    qemu_io(backend.export("r1", "a2"), "read -P 0xaa 0 64k")


def test_a_live_extend_whose_resize_fails_puts_every_export_back(storage, monkeypatch):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    backend.export("v1", "a2")
    qemu_io(uri, "write -P 0x33 0 64k")

    def refused(node_name: str, size: int) -> None:
        raise Refused("the storage daemon refused block_resize: no space")

    monkeypatch.setattr(backend.node, "resize", refused)
    with pytest.raises(Refused, match="no space"):
        backend.extend("v1", 2)
    assert sorted(e.id for e in backend.node.exports()) == ["att-a1", "att-a2"]
    assert qemu_io(uri, "length").strip() == "1 GiB"
    qemu_io(uri, "read -P 0x33 0 64k")


def test_a_live_extend_that_cannot_put_an_export_back_says_so_and_exporting_again_serves_it(storage, monkeypatch):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    qemu_io(uri, "write -P 0x33 0 64k")
    add_export = backend.node.add_export

    def refused(export_id: str, node_name: str, name: str) -> None:
        raise Refused("the storage daemon refused block-export-add: out of memory")

    monkeypatch.setattr(backend.node, "add_export", refused)
    with pytest.raises(ExportsLost) as caught:
        backend.extend("v1", 2)
    assert "no longer served to attachment(s) a1" in caught.value.message and "out of memory" in caught.value.message
    assert backend.node.exports() == []
    monkeypatch.setattr(backend.node, "add_export", add_export)
    assert backend.export("v1", "a1") == uri
    assert qemu_io(uri, "length").strip() == "2 GiB"
    qemu_io(uri, "read -P 0x33 0 64k")
