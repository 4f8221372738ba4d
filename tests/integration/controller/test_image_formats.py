"""Uploads are checked with the real qemu-img against the image's `disk_format`.

Empty files, files of another format, and qcow2 files that point at other files
(a backing file, an external data file) are refused with a 400 naming the
field; the image stays `queued` with no file, so the owner can upload again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dpustack.controller.services.volumes import GiB

MiB = 1 << 20


def _qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def _upload(cloud, name: str, content: bytes, *, status: int) -> dict:
    answer = cloud.api.put(f"/v1/images/{name}/file", content=content,
                           headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == status, answer.text
    return answer.json()


def _images_dir(cloud) -> Path:
    return cloud.settings.images_dir


def _refused(cloud, name: str, content: bytes, field: str) -> str:
    """Upload `content` to image `name`, expect a 400 naming `field`; the image must be retryable."""
    error = _upload(cloud, name, content, status=400)["error"]
    assert error["code"] == "invalid_input" and error["field"] == field, error
    image = cloud.call("GET", f"/v1/images/{name}")
    assert image["status"] == "queued" and image["size"] == 0 and image["checksum"] == ""
    assert list(_images_dir(cloud).iterdir()) == []  # neither the file nor a partial one is kept
    return error["message"]


@pytest.fixture
def made(tmp_path: Path) -> Path:
    """A directory of real images made by qemu-img."""
    directory = tmp_path / "made"
    directory.mkdir()
    (directory / "disk.raw").write_bytes(b"dpustack!" * 1000)
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", directory / "disk.raw", directory / "disk.qcow2")
    _qemu_img("create", "-f", "qcow2", directory / "base.qcow2", "1M")
    _qemu_img("create", "-f", "qcow2", "-b", directory / "base.qcow2", "-F", "qcow2", directory / "overlay.qcow2")
    _qemu_img("create", "-f", "qcow2", "-o", f"data_file={directory / 'data.raw'}", directory / "external.qcow2",
              "1M")
    _qemu_img("create", "-f", "qcow2", directory / "huge.qcow2", "2G")
    return directory


def test_an_empty_upload_is_refused_and_the_image_can_be_uploaded_again(cloud):
    cloud.call("POST", "/v1/images", {"name": "img"})
    assert "empty" in _refused(cloud, "img", b"", "file")
    boot_sector = b"\x00" * 510 + b"\x55\xaa"  # what tests and the lab upload: a valid raw image
    image = _upload(cloud, "img", boot_sector, status=200)
    assert image["status"] == "active" and image["size"] == 512 and image["disk_format"] == "raw"
    assert image["virtual_size"] == 512
    assert [p.name for p in _images_dir(cloud).iterdir()] == [image["id"]]


def test_a_file_of_another_format_than_claimed_is_refused_naming_disk_format(cloud, made):
    cloud.call("POST", "/v1/images", {"name": "said-raw"})  # disk_format defaults to raw
    message = _refused(cloud, "said-raw", (made / "disk.qcow2").read_bytes(), "disk_format")
    assert "qcow2" in message and "raw" in message
    cloud.call("POST", "/v1/images", {"name": "said-qcow2", "disk_format": "qcow2"})
    message = _refused(cloud, "said-qcow2", (made / "disk.raw").read_bytes(), "disk_format")
    assert "is a raw image" in message
    # The owner retries with the right file.
    assert _upload(cloud, "said-qcow2", (made / "disk.qcow2").read_bytes(), status=200)["status"] == "active"


def test_qcow2_images_that_name_other_files_are_refused(cloud, made):
    cloud.call("POST", "/v1/images", {"name": "overlay", "disk_format": "qcow2"})
    assert "backing file" in _refused(cloud, "overlay", (made / "overlay.qcow2").read_bytes(), "file")
    cloud.call("POST", "/v1/images", {"name": "external", "disk_format": "qcow2"})
    assert "data file" in _refused(cloud, "external", (made / "external.qcow2").read_bytes(), "file")


def test_an_unknown_disk_format_is_a_400_naming_it(cloud):
    answer = cloud.api.post("/v1/images", json={"name": "x", "disk_format": "vmdk"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "disk_format"
    assert cloud.call("GET", "/v1/images") == []


def test_a_server_booted_from_a_qcow2_image_gets_its_disk_as_raw_bytes(cloud, made):
    cloud.setup_basics()
    cloud.call("POST", "/v1/images", {"name": "q", "disk_format": "qcow2"})
    image = _upload(cloud, "q", (made / "disk.qcow2").read_bytes(), status=200)
    assert image["disk_format"] == "qcow2" and image["virtual_size"] == 9216  # 9,000 bytes, in 512-byte sectors
    op = cloud.build("web1", image="q")
    assert op["status"] == "succeeded", op
    (volume_id,) = cloud.call("GET", "/v1/instances/web1")["volumes"]
    disk = cloud.settings.volumes_dir / f"{volume_id}.img"
    assert disk.stat().st_size == 40 * GiB  # the flavor's disk, sparse
    with disk.open("rb") as handle:
        assert handle.read(9216) == (made / "disk.raw").read_bytes().ljust(9216, b"\x00")


def test_the_disk_of_a_qcow2_image_must_fit_the_flavor(cloud, made):
    cloud.setup_basics()
    cloud.call("POST", "/v1/flavors", {"name": "bm.1g", "vcpus": 1, "ram": 1024, "disk": 1, "type": "bm"})
    cloud.call("POST", "/v1/images", {"name": "huge", "disk_format": "qcow2"})
    image = _upload(cloud, "huge", (made / "huge.qcow2").read_bytes(), status=200)
    assert image["size"] < MiB and image["virtual_size"] == 2 * GiB
    answer = cloud.api.post("/v1/instances", json={"name": "s", "flavor": "bm.1g", "image": "huge",
                                                   "networks": [{"network": "net1"}]})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "image"
    answer = cloud.api.post("/v1/volumes", json={"name": "v", "size": 1, "image": "huge"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "size"
    assert cloud.volume("v", size=2, image="huge")["status"] == "available"
