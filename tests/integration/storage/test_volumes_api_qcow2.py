"""A user's whole volume flow through the controller API on the qcow2 storage service: a real
qemu-storage-daemon serves every attachment over NBD, and qemu-io, as the DPU, reads and writes the
volumes through the very URIs the agents were given.

The in-process agents run the memory storage driver: it records the URI it was asked to attach,
which is the storage node's export of that attachment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Cloud
from storage_node import NbdClient, StorageDaemon, qemu_io, short_directory

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture
def cloud(tmp_path, free_port) -> Iterator[Cloud]:
    directory = short_directory()
    daemon = StorageDaemon(directory)
    daemon.start()
    try:
        lab = Cloud(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", nodes=1, volume_backend="qcow2",
                    storage_qmp=daemon.qmp_socket, storage_nbd=f"127.0.0.1:{free_port()}")
        try:
            yield lab
        finally:
            lab.close()
            lab.volume_backend.node.close()
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _upload(cloud: Cloud, name: str, path: Path, disk_format: str) -> dict:
    cloud.call("POST", "/v1/images", {"name": name, "disk_format": disk_format}, expect=201)
    answer = cloud.api.put(f"/v1/images/{name}/file", content=path.read_bytes(),
                           headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    return cloud.call("GET", f"/v1/images/{name}")


def _rests_on(cloud: Cloud, volume_id: str) -> tuple[str | None, str | None]:
    """The file and format the volume's bottom layer rests on, as qemu-img reads the pool's file."""
    pool = cloud.volume_backend.pool
    layer = pool.layer(volume_id, pool.read(volume_id).layers[0])
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(layer)], check=True,
                                     capture_output=True, text=True).stdout)
    return info.get("full-backing-filename"), info.get("backing-filename-format")


def _served(cloud: Cloud, name: str) -> str:
    """The URI the node's storage driver attached the volume from; it names the attachment's export."""
    volume = cloud.call("GET", f"/v1/volumes/{name}")
    (attachment,) = volume["attachments"]
    (uri,) = [a.uri for a in cloud.drivers("dpu-bm-1").storage.list() if a.volume_id == volume["id"]]
    assert uri == f"nbd://127.0.0.1:{cloud.volume_backend.node.nbd_port}/{attachment['id']}"
    assert f"att-{attachment['id']}" in {e.id for e in cloud.volume_backend.node.exports()}
    return uri


def _refused(answer, status: int, field: str, *names: str) -> None:
    error = answer.json()["error"]
    assert (answer.status_code, error.get("field")) == (status, field), answer.text
    assert all(name in error["message"] for name in names), error["message"]


def _succeeds(cloud: Cloud, method: str, path: str, body: dict | None = None) -> None:
    operation = cloud.act(method, path, body)
    assert operation["status"] == "succeeded", operation


def test_images_volumes_attachments_snapshots_extend_and_flatten_through_the_api(cloud, tmp_path):
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\x11" * MiB)
    qcow2 = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "4M"], check=True)
    qemu_io(str(qcow2), "write -P 0x22 0 1M", fmt="qcow2")
    cloud.setup_basics(image_bytes=raw.read_bytes())  # image "centos": raw, the servers' boot image
    cirros = _upload(cloud, "cirros", qcow2, "qcow2")
    assert (cirros["status"], cirros["disk_format"], cirros["virtual_size"]) == ("active", "qcow2", 4 * MiB)
    images = cloud.settings.images_dir.absolute()

    # volumes: copy-on-write on the image file, and empty
    boot1 = cloud.volume("boot1", image="cirros", size=1)
    assert (boot1["status"], boot1["image_id"], boot1["bootable"]) == ("available", cirros["id"], True)
    assert _rests_on(cloud, boot1["id"]) == (str(images / cirros["id"]), "qcow2")
    data1 = cloud.volume("data1", size=1)
    assert _rests_on(cloud, data1["id"]) == (None, None)

    # a server boots from a volume on the raw image; volumes are attached through its storage functions
    _succeeds(cloud, "POST", "/v1/instances", {"name": "web1", "flavor": "bm.small", "image": "centos",
                                                "networks": [{"network": "net1"}], "node": "dpu-bm-1"})
    (boot_of_web1,) = cloud.call("GET", "/v1/instances/web1")["volumes"]
    centos = cloud.call("GET", "/v1/images/centos")
    assert _rests_on(cloud, boot_of_web1) == (str(images / centos["id"]), "raw")
    for name in ("data1", "boot1"):
        _succeeds(cloud, "POST", "/v1/instances/web1/volumes", {"volume": name})
    assert cloud.call("GET", "/v1/volumes/data1")["status"] == "in-use"
    qemu_io(_served(cloud, boot_of_web1), "read -P 0x11 0 1M", "read -P 0 1M 1M")
    qemu_io(_served(cloud, "boot1"), "read -P 0x22 0 1M", "read -P 0 1M 3M")
    data_uri = _served(cloud, "data1")
    assert qemu_io(data_uri, "length").strip() == "1 GiB"

    # a snapshot taken while the server writes holds what it wrote before, and the volume what came after
    with NbdClient(data_uri) as server:
        server.run("write -P 0xaa 0 64k")
        server.run("write -P 0xa1 1M 64k")
        snapshot = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "snap1"}, expect=202)
        assert cloud.wait({"id": snapshot["operation_id"]})["status"] == "succeeded"
        server.run("write -P 0xbb 0 64k")  # the same connection: the export never went away
    shown = cloud.call("GET", "/v1/snapshots/snap1")
    web1 = cloud.call("GET", "/v1/instances/web1")
    assert (shown["status"], shown["instance_id"], shown["node"]) == ("available", web1["id"], "dpu-bm-1")
    served = {e.id for e in cloud.volume_backend.node.exports()}
    snapshot = cloud.call("POST", f"/v1/volumes/{boot_of_web1}/snapshots", {"name": "bootsnap"}, expect=202)
    assert cloud.wait({"id": snapshot["operation_id"]})["status"] == "succeeded"
    assert {e.id for e in cloud.volume_backend.node.exports()} == served  # every export stayed up
    assert cloud.call("GET", f"/v1/volumes/{boot_of_web1}")["status"] == "in-use"
    restored = cloud.volume("restored", snapshot="snap1")
    assert (restored["size"], restored["snapshot_id"]) == (1, shown["id"])
    _succeeds(cloud, "POST", "/v1/instances/web1/volumes", {"volume": "restored"})
    qemu_io(_served(cloud, "restored"), "read -P 0xaa 0 64k", "read -P 0xa1 1M 64k")
    qemu_io(data_uri, "read -P 0xbb 0 64k", "read -P 0xa1 1M 64k")

    # extend while attached, after that live snapshot: the same export serves the larger disk
    _succeeds(cloud, "POST", "/v1/volumes/data1/extend", {"size": 2})
    assert (cloud.call("GET", "/v1/volumes/data1")["size"], _served(cloud, "data1")) == (2, data_uri)
    assert qemu_io(data_uri, "length").strip() == "2 GiB"
    qemu_io(data_uri, "read -P 0xbb 0 64k", "write -P 0xcc 1536M 64k", "read -P 0xcc 1536M 64k")

    # what shares data cannot go until flattened (an image is flattened out of its volumes by its delete)
    _refused(cloud.api.delete("/v1/volumes/data1"), 409, "volume", "detach")
    _refused(cloud.api.delete("/v1/snapshots/snap1"), 409, "snapshot", "restored")
    for volume in ("restored", "boot1", boot_of_web1):  # live: each stays attached
        _succeeds(cloud, "POST", f"/v1/volumes/{volume}/flatten")
    assert _rests_on(cloud, restored["id"]) == _rests_on(cloud, boot1["id"]) == (None, None)
    cloud.call("DELETE", "/v1/images/cirros", expect=204)
    cloud.call("DELETE", "/v1/images/centos", expect=204)
    qemu_io(_served(cloud, "boot1"), "read -P 0x22 0 1M")  # the image's data now lives in the volume
    qemu_io(_served(cloud, boot_of_web1), "read -P 0x11 0 1M")
    qemu_io(_served(cloud, "restored"), "read -P 0xaa 0 64k")

    # a volume with a snapshot is not deleted; the snapshot is, merged into the live volume
    _succeeds(cloud, "DELETE", "/v1/instances/web1/volumes/data1")
    assert cloud.call("GET", "/v1/volumes/data1")["attachments"] == []
    _refused(cloud.api.delete("/v1/volumes/data1"), 409, "volume", "snap1")
    _succeeds(cloud, "POST", "/v1/instances/web1/volumes", {"volume": "data1"})
    data_uri = _served(cloud, "data1")  # a new attachment, a new export
    _succeeds(cloud, "DELETE", "/v1/snapshots/snap1")
    assert cloud.api.get("/v1/snapshots/snap1").status_code == 404
    qemu_io(data_uri, "read -P 0xbb 0 64k", "read -P 0xa1 1M 64k", "read -P 0xcc 1536M 64k")

    # deleting the server ends every export and keeps its boot volume, which has a snapshot, detached
    _succeeds(cloud, "DELETE", "/v1/instances/web1")
    assert (cloud.volume_backend.node.exports(), cloud.volume_backend.node.nodes()) == ([], [])
    kept = cloud.call("GET", f"/v1/volumes/{boot_of_web1}")
    assert (kept["status"], kept["instance_id"], kept["attachments"]) == ("available", None, [])
    assert cloud.call("GET", "/v1/snapshots/bootsnap")["status"] == "available"
    _succeeds(cloud, "DELETE", "/v1/snapshots/bootsnap")
    for name in ("data1", "restored", "boot1", boot_of_web1):  # then every volume can go, leaving nothing
        cloud.call("DELETE", f"/v1/volumes/{name}", expect=204)
    assert cloud.call("GET", "/v1/volumes") == []
    assert [p for p in cloud.volume_backend.pool.volumes.iterdir() if p.is_dir()] == []


def test_deleting_an_image_flattens_an_attached_volume_live_which_keeps_serving_its_data(cloud, tmp_path):
    qcow2 = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "4M"], check=True)
    qemu_io(str(qcow2), "write -P 0x22 0 1M", fmt="qcow2")
    cloud.setup_basics()
    cirros = _upload(cloud, "cirros", qcow2, "qcow2")
    image_file = cloud.settings.images_dir / cirros["id"]
    _succeeds(cloud, "POST", "/v1/instances", {"name": "web1", "flavor": "bm.small", "image": "centos",
                                                "networks": [{"network": "net1"}], "node": "dpu-bm-1"})
    boot1 = cloud.volume("boot1", image="cirros", size=1)
    _succeeds(cloud, "POST", "/v1/instances/web1/volumes", {"volume": "boot1"})
    uri = _served(cloud, "boot1")
    with NbdClient(uri) as server:  # the server writes while the image is flattened out of its disk
        server.run("write -P 0x33 2M 64k")
        started = cloud.call("DELETE", "/v1/images/cirros", expect=202)
        operation = cloud.wait(started)
        assert operation["status"] == "succeeded", operation
        server.run("read -P 0x22 0 1M")  # the same connection: the export never went away
    assert cloud.api.get("/v1/images/cirros").status_code == 404 and not image_file.exists()
    shown = cloud.call("GET", "/v1/volumes/boot1")
    assert (shown["image_id"], shown["status"]) == (None, "in-use")
    assert _rests_on(cloud, boot1["id"]) == (None, None)
    assert _served(cloud, "boot1") == uri
    qemu_io(uri, "read -P 0x22 0 1M", "read -P 0x33 2M 64k", "read -P 0 1M 1M")
