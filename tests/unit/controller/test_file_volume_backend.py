"""Volumes as files: complete data under the final name, never a partial file left behind."""

from __future__ import annotations

import pytest

from dpustack.controller.volumebackend import FileVolumeBackend, GiB, ImageSource
from dpustack.errors import InvalidInput


@pytest.fixture
def backend(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "volumes").mkdir()
    return FileVolumeBackend(tmp_path / "images", tmp_path / "volumes")


def test_an_empty_volume_is_a_sparse_file_of_its_size_whose_uri_the_agent_gets(backend):
    backend.create("v1", 2)
    (path,) = backend.volumes_dir.iterdir()
    assert path.name == "v1.img" and path.stat().st_size == 2 * GiB
    assert backend.uri("v1") == path.as_uri()


def test_a_raw_image_is_copied_and_a_partial_file_of_an_earlier_attempt_replaced(backend):
    (backend.images_dir / "img").write_bytes(b"disk")
    (backend.volumes_dir / "v1.img.part").write_bytes(b"half")
    backend.create("v1", 1, ImageSource("img", "raw"))
    assert [p.name for p in backend.volumes_dir.iterdir()] == ["v1.img"]
    with (backend.volumes_dir / "v1.img").open("rb") as data:
        assert data.read(5) == b"disk\0"


def test_a_volume_that_cannot_be_written_leaves_nothing_and_names_the_size(backend):
    with pytest.raises(InvalidInput) as caught:
        backend.create("v1", 1, ImageSource("missing", "raw"))
    assert caught.value.field == "size" and "cannot create a 1 GiB volume" in caught.value.message
    assert list(backend.volumes_dir.iterdir()) == []


def test_delete_removes_complete_and_partial_data_and_minds_no_missing_file(backend):
    backend.create("v1", 1)
    (backend.volumes_dir / "v1.img.part").write_bytes(b"half")
    backend.delete("v1")
    backend.delete("v1")
    assert list(backend.volumes_dir.iterdir()) == []
