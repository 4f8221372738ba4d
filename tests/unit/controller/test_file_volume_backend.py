"""Volumes as files: complete data under the final name, never a partial file left behind; snapshots as
sparse copies, refused while a DPU may write the volume."""

from __future__ import annotations

import pytest

from dpustack.controller.volumebackend import FileVolumeBackend, GiB, ImageSource
from dpustack.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
def backend(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "volumes").mkdir()
    return FileVolumeBackend(tmp_path / "images", tmp_path / "volumes")


def _head(backend: FileVolumeBackend, volume_id: str, count: int) -> bytes:
    with backend.path(volume_id).open("rb") as data:
        return data.read(count)


def _write(backend: FileVolumeBackend, volume_id: str, data: bytes) -> None:
    with backend.path(volume_id).open("r+b") as handle:
        handle.write(data)


def test_an_empty_volume_is_a_sparse_file_of_its_size_exported_as_its_uri(backend):
    backend.create("v1", 2)
    (path,) = backend.volumes_dir.iterdir()
    assert path.name == "v1.img" and path.stat().st_size == 2 * GiB and path.stat().st_blocks == 0
    assert backend.served() == set()
    assert backend.export("v1", "a1") == path.as_uri()
    assert backend.export("v1", "a1") == path.as_uri()  # idempotent
    assert backend.served() == {"a1"}
    backend.unexport("a1")
    assert backend.served() == set()


def test_a_raw_image_is_copied_and_a_partial_file_of_an_earlier_attempt_replaced(backend):
    (backend.images_dir / "img").write_bytes(b"disk")
    (backend.volumes_dir / "v1.img.part").write_bytes(b"half")
    backend.create("v1", 1, ImageSource("img", "raw"))
    assert [p.name for p in backend.volumes_dir.iterdir()] == ["v1.img"]
    assert _head(backend, "v1", 5) == b"disk\0"


def test_a_volume_that_cannot_be_written_leaves_nothing_and_names_the_size(backend):
    with pytest.raises(InvalidInput) as caught:
        backend.create("v1", 1, ImageSource("missing", "raw"))
    assert caught.value.field == "size" and "cannot create a 1 GiB volume" in caught.value.message
    assert list(backend.volumes_dir.iterdir()) == []


def test_a_source_larger_than_the_volume_is_refused_not_cut(backend):
    with (backend.images_dir / "big").open("wb") as handle:
        handle.truncate(GiB + 512)
    with pytest.raises(InvalidInput) as caught:
        backend.create("v1", 1, ImageSource("big", "raw"))
    assert caught.value.field == "size" and list(backend.volumes_dir.iterdir()) == []


def test_delete_removes_complete_and_partial_data_and_its_exports_and_minds_no_missing_file(backend):
    backend.create("v1", 1)
    backend.export("v1", "a1")
    (backend.volumes_dir / "v1.img.part").write_bytes(b"half")
    backend.delete("v1")
    backend.delete("v1")
    assert list(backend.volumes_dir.iterdir()) == [] and list(backend.exports_dir.iterdir()) == []


def test_a_snapshot_is_a_sparse_copy_that_later_writes_do_not_change_and_a_source_for_volumes(backend):
    backend.create("v1", 1)
    _write(backend, "v1", b"before")
    backend.snapshot("v1", "s1")
    _write(backend, "v1", b"after!")
    snapshot = backend.snapshot_path("s1")
    assert snapshot.stat().st_size == GiB and snapshot.stat().st_blocks < 64  # a hole, not a GiB of zeros
    backend.create("r1", 2, snapshot_id="s1")
    assert _head(backend, "r1", 6) == b"before" and backend.path("r1").stat().st_size == 2 * GiB
    assert _head(backend, "v1", 6) == b"after!"
    backend.snapshot("v1", "s1")  # idempotent: the snapshot keeps its point in time
    backend.create("r2", 1, snapshot_id="s1")
    assert _head(backend, "r2", 6) == b"before"
    backend.delete_snapshot("s1")
    backend.delete_snapshot("s1")
    assert not snapshot.exists()


def test_a_snapshot_of_an_exported_volume_is_refused_until_it_is_unexported(backend):
    backend.create("v1", 1)
    backend.export("v1", "a1")
    with pytest.raises(Conflict) as caught:
        backend.snapshot("v1", "s1")
    assert caught.value.field == "volume" and "a1" in caught.value.message
    assert not backend.snapshot_path("s1").exists()
    backend.unexport("a1")
    backend.unexport("a1")
    backend.snapshot("v1", "s1")
    assert backend.snapshot_path("s1").exists()


def test_a_volume_comes_from_an_image_or_a_snapshot_not_both(backend):
    with pytest.raises(InvalidInput) as caught:
        backend.create("v1", 1, ImageSource("img", "raw"), snapshot_id="s1")
    assert caught.value.field == "snapshot"


def test_extend_grows_the_file_keeping_its_data_and_refuses_to_shrink(backend):
    backend.create("v1", 1)
    _write(backend, "v1", b"kept")
    backend.extend("v1", 3)
    assert backend.path("v1").stat().st_size == 3 * GiB and _head(backend, "v1", 4) == b"kept"
    with pytest.raises(InvalidInput) as caught:
        backend.extend("v1", 2)
    assert caught.value.field == "size" and backend.path("v1").stat().st_size == 3 * GiB
    with pytest.raises(NotFound):
        backend.extend("missing", 2)


def test_flatten_changes_nothing_because_each_file_is_a_whole_copy(backend):
    (backend.images_dir / "img").write_bytes(b"disk")
    backend.create("v1", 1, ImageSource("img", "raw"))
    backend.flatten("v1")
    (backend.images_dir / "img").unlink()
    assert _head(backend, "v1", 4) == b"disk"
