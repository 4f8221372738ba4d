"""The controller's storage reconcile against a real storage daemon: after a kill -9 and a restart of
the storage node's qemu-storage-daemon, every attached volume is served again at the same URI with
the same bytes; while the daemon is down, nothing attached is marked available; a volume left
unserved by a failed live extend (`error`) is served again and back `in-use`."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator

import pytest

from dpustack.controller.storage.qsd_node import Refused
from harness import Cloud
from storage_node import StorageDaemon, qemu_io, short_directory


@pytest.fixture
def daemon() -> Iterator[StorageDaemon]:
    directory = short_directory()
    storage = StorageDaemon(directory)
    storage.start()
    try:
        yield storage
    finally:
        storage.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _cloud(tmp_path, daemon: StorageDaemon, port: int, interval: float) -> Cloud:
    return Cloud(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", nodes=1, volume_backend="qcow2",
                 storage_qmp=daemon.qmp_socket, storage_nbd=f"127.0.0.1:{port}", storage_reconcile_interval=interval)


@pytest.fixture
def cloud(tmp_path, daemon, free_port) -> Iterator[Cloud]:
    lab = _cloud(tmp_path, daemon, free_port(), interval=0.1)
    try:
        lab.setup_basics(image_bytes=b"\x11" * (1 << 20))
        yield lab
    finally:
        lab.close()
        lab.volume_backend.node.close()


def _attached(cloud: Cloud) -> dict[str, str]:
    """The URI each attached volume was attached from, by volume name."""
    uris = {a.volume_id: a.uri for a in cloud.drivers("dpu-bm-1").storage.list()}
    return {v["name"]: uris[v["id"]] for v in cloud.call("GET", "/v1/volumes") if v["attachments"]}


def _until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_after_the_storage_daemon_is_killed_and_restarted_every_export_comes_back(cloud, daemon, caplog):
    assert cloud.act("POST", "/v1/instances", {"name": "web1", "flavor": "bm.small", "image": "centos",
                                               "networks": [{"network": "net1"}]})["status"] == "succeeded"
    cloud.volume("data1", size=1)
    assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
    uris = _attached(cloud)
    assert len(uris) == 2
    qemu_io(uris["data1"], "write -P 0x5d 1M 64k", "flush")
    served = {e.id for e in cloud.volume_backend.node.exports()}

    caplog.set_level(logging.WARNING, logger="dpustack.controller.storage_reconciler")
    daemon.kill()
    _until(lambda: cloud.storage_reconciler.last is not None and not cloud.storage_reconciler.last.ok,
           "no pass found the daemon gone")
    assert "cannot ask the volume backend what it serves" in cloud.storage_reconciler.last.errors[0]
    assert {v["status"] for v in cloud.call("GET", "/v1/volumes")} == {"in-use"}  # nothing in use made available

    daemon.start()  # it knows nothing: no NBD server, no export
    _until(lambda: {e.id for e in cloud.volume_backend.node.exports()} == served, "the exports did not come back")
    assert _attached(cloud) == uris  # the same URIs: the DPUs' NBD clients reconnect to them
    qemu_io(uris["data1"], "read -P 0x5d 1M 64k", "read -P 0 0 64k")
    qemu_io(uris[next(name for name in uris if name != "data1")], "read -P 0x11 0 1M")
    repaired = [r.getMessage() for r in caplog.records if "served again" in r.getMessage()]
    assert len(repaired) == 2 and all("storage reconcile pass" in message for message in repaired)
    assert {v["status"] for v in cloud.call("GET", "/v1/volumes")} == {"in-use"}


def test_a_volume_a_failed_live_extend_left_unserved_is_served_again_and_in_use(tmp_path, daemon, free_port,
                                                                                 monkeypatch):
    cloud = _cloud(tmp_path, daemon, free_port(), interval=3600)  # passes run when the test says
    try:
        cloud.setup_basics()
        assert cloud.build("web1")["status"] == "succeeded"
        volume = cloud.volume("data1", size=1)
        assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
        uri = _attached(cloud)["data1"]
        qemu_io(uri, "write -P 0x5e 0 64k", "flush")
        node = cloud.volume_backend.node
        add_export = node.add_export

        def refused(*args: object) -> None:
            raise Refused("the storage daemon refused block-export-add: out of memory")

        monkeypatch.setattr(node, "add_export", refused)
        operation = cloud.act("POST", "/v1/volumes/data1/extend", {"size": 2})
        assert operation["status"] == "failed" and "no longer served to attachment(s)" in operation["error"]
        shown = cloud.call("GET", "/v1/volumes/data1")
        assert shown["status"] == "error" and "the volume is not served to its server" in shown["fault"]["message"]
        assert cloud.storage_reconciler.run().errors  # still refused: it stays error, and is retried

        monkeypatch.setattr(node, "add_export", add_export)
        result = cloud.storage_reconciler.run()
        assert result.ok and result.repaired == [
            f"volume {volume['id']} served again for attachment {shown['attachments'][0]['id']}"]
        shown = cloud.call("GET", "/v1/volumes/data1")
        assert (shown["status"], shown["fault"], shown["size"]) == ("in-use", None, 2)  # the resize itself worked
        assert qemu_io(uri, "length").strip() == "2 GiB"
        qemu_io(uri, "read -P 0x5e 0 64k")
    finally:
        cloud.close()
        cloud.volume_backend.node.close()
