"""`image create`: the claimed disk format goes to the API; a refused upload leaves no image. `image delete`:
at once, or through the operation that flattens the volumes made from the image."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke


def test_image_create_sends_the_disk_format(dpustack: Invoke, fake: FakeApi, tmp_path) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\x00" * 100)
    result = dpustack("image", "create", "q", "--file", str(disk), "--disk-format", "qcow2", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["disk_format"] == "qcow2"
    create = next(r for r in fake.requests if r.method == "POST")
    assert json.loads(create.content) == {"name": "q", "visibility": "private", "disk_format": "qcow2"}
    table = dpustack("image", "show", "q")
    assert "disk_format" in table.stdout and "virtual_size" in table.stdout


def test_image_create_with_an_unknown_disk_format_is_a_usage_error(dpustack: Invoke, fake: FakeApi,
                                                                   tmp_path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"x")
    result = dpustack("image", "create", "v", "--file", str(disk), "--disk-format", "vmdk")
    assert result.exit_code == 2 and "vmdk" in result.output
    assert fake.requests == []


def test_a_refused_upload_says_why_and_leaves_no_image(dpustack: Invoke, fake: FakeApi, tmp_path) -> None:
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    result = dpustack("image", "create", "centos", "--file", str(empty))
    assert result.exit_code == 1
    assert "error: the upload for image 'centos' is empty" in result.stderr
    assert fake.store["images"] == {}
    assert [r.method for r in fake.requests] == ["POST", "PUT", "DELETE"]


def _image(dpustack: Invoke, tmp_path, name: str) -> None:
    disk = tmp_path / f"{name}.img"
    disk.write_bytes(b"\x01" * 512)
    assert dpustack("image", "create", name, "--file", str(disk)).exit_code == 0


def test_image_delete_is_at_once_or_follows_the_flattening_of_the_volumes_on_it(dpustack: Invoke, fake: FakeApi,
                                                                               tmp_path) -> None:
    _image(dpustack, tmp_path, "alone")
    deleted = dpustack("image", "delete", "alone")
    assert deleted.exit_code == 0 and "image alone deleted" in deleted.stdout

    _image(dpustack, tmp_path, "shared")
    dpustack("volume", "create", "boot1", "--image", "shared", "--size", "1", "--wait")
    started = dpustack("image", "delete", "shared")
    assert started.exit_code == 0, started.output
    (operation,) = [o for o in fake.store["operations"].values() if o["action"] == "delete_image"]
    assert f"delete image shared: operation {operation['id']} pending" in started.stdout
    assert fake.find("images", "shared")["status"] == "deleting"

    _image(dpustack, tmp_path, "other")
    dpustack("volume", "create", "boot2", "--image", "other", "--size", "1", "--wait")
    waited = dpustack("image", "delete", "other", "--wait")
    assert waited.exit_code == 0, waited.output
    assert "delete image other: volumes flattened, image deleted" in waited.stdout
    assert "✓ flatten_volumes" in waited.stderr
    assert fake.find("images", "other") is None and fake.find("volumes", "boot2")["image_id"] is None
