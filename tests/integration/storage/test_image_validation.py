"""Uploads checked with the real qemu-img before they become images that volumes rest on: the format
they claim, a disk of some size, and no reference to any other file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dpustack.controller.services.images import check_upload
from dpustack.errors import InvalidInput


def _qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def _refused(path: Path, disk_format: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_upload(path, name="img", disk_format=disk_format, size=path.stat().st_size)
    return caught.value


def test_a_qcow2_upload_is_taken_with_the_size_of_the_disk_it_holds(tmp_path):
    _qemu_img("create", "-f", "qcow2", tmp_path / "disk.qcow2", "3M")
    found = check_upload(tmp_path / "disk.qcow2", name="img", disk_format="qcow2",
                         size=(tmp_path / "disk.qcow2").stat().st_size)
    assert found.format == "qcow2" and found.virtual_size == 3 << 20


def test_a_qcow2_with_a_backing_file_is_refused_naming_the_file(tmp_path):
    _qemu_img("create", "-f", "raw", tmp_path / "secret.raw", "1M")
    _qemu_img("create", "-f", "qcow2", "-b", tmp_path / "secret.raw", "-F", "raw", tmp_path / "overlay.qcow2")
    error = _refused(tmp_path / "overlay.qcow2", "qcow2")
    assert error.field == "file" and "backing file" in error.message and "secret.raw" in error.message


def test_a_qcow2_with_an_external_data_file_is_refused_naming_the_file(tmp_path):
    _qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", tmp_path / "external.qcow2", "1M")
    error = _refused(tmp_path / "external.qcow2", "qcow2")
    assert error.field == "file" and "data file" in error.message


@pytest.mark.parametrize(("made", "declared"), [("qcow2", "raw"), ("raw", "qcow2")])
def test_a_file_of_another_format_than_declared_is_refused_naming_disk_format(tmp_path, made, declared):
    path = tmp_path / f"disk.{made}"
    _qemu_img("create", "-f", made, path, "1M")
    if made == "raw":
        path.write_bytes(b"\x55" * 4096)  # a file of data, not a qcow2 header
    error = _refused(path, declared)
    assert error.field == "disk_format" and f"is a {made} image" in error.message


def test_a_qcow2_of_a_disk_of_no_bytes_is_refused(tmp_path):
    _qemu_img("create", "-f", "qcow2", tmp_path / "empty.qcow2", "0")
    error = _refused(tmp_path / "empty.qcow2", "qcow2")
    assert error.field == "file" and "no bytes" in error.message
