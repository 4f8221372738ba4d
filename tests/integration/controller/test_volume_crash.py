"""A controller that dies while it writes a volume's data never leaves an `available` volume with partial data.

The death is simulated in process: the volume backend writes part of the data and then raises an
exception no step catches, which stops the worker there as a kill -9 would (no undo, no failure
recorded), so the operation stays `running` and its lease is no longer renewed. Once the lease has
run out (1 s here) the orchestrator resumes the operation at that step, which writes the data again.
tests/integration/test_boot_volume_crash.py does the same with real processes and a real SIGKILL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from dpustack.controller.storage import files
from harness import Cloud

GiB = 1 << 30
IMAGE = bytes(range(256)) * 64  # 16 KiB with no zero-filled hole


class WorkerKilled(BaseException):
    """Stops a worker mid-step, as the death of its process would."""


@pytest.fixture
def cloud(tmp_path, database_url) -> Iterator[Cloud]:
    cloud = Cloud(tmp_path, database_url, nodes=1, lease_seconds=1.0)
    try:
        cloud.setup_basics(image_bytes=IMAGE)
        yield cloud
    finally:
        cloud.close()


def _head(disk: Path) -> bytes:
    with disk.open("rb") as data:
        return data.read(len(IMAGE))


def _until_killed(cloud: Cloud, operation_id: str, method: str) -> dict:
    """The operation once the backend's `method` was interrupted: still running, its step not done."""
    deadline = time.monotonic() + 10
    while not any(call[0] == method for call in cloud.volume_backend.calls):
        assert time.monotonic() < deadline, "the backend was never called"
        time.sleep(0.01)
    operation = cloud.call("GET", f"/v1/operations/{operation_id}")
    assert operation["status"] == "running" and operation["steps"][0]["status"] == "running", operation
    return operation


def test_a_volume_whose_copy_was_cut_short_is_creating_until_the_resumed_copy_completes(cloud):
    cloud.volume_backend.arm("create", WorkerKilled())
    answer = cloud.call("POST", "/v1/volumes", {"name": "boot1", "image": "centos", "size": 2}, expect=202)
    _until_killed(cloud, answer["operation_id"], "create")
    partial = files.partial_path(cloud.volume_backend.path(answer["id"]))
    assert partial.exists()  # what the dead worker left
    assert cloud.call("GET", "/v1/volumes/boot1")["status"] == "creating"

    operation = cloud.wait({"id": answer["operation_id"]})
    assert operation["status"] == "succeeded", operation
    volume = cloud.call("GET", "/v1/volumes/boot1")
    assert volume["status"] == "available" and volume["operation_id"] is None
    disk = cloud.volume_backend.path(volume["id"])
    assert disk.stat().st_size == 2 * GiB and _head(disk) == IMAGE
    assert not partial.exists()
    creates = [call for call in cloud.volume_backend.calls if call[0] == "create"]
    assert creates == [("create", volume["id"], 2, volume["image_id"], None)] * 2  # the same write, again


def test_a_snapshot_whose_worker_died_is_taken_again_from_scratch(cloud):
    cloud.volume("data1", size=1)
    cloud.volume_backend.arm("snapshot", WorkerKilled())
    answer = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "snap1"}, expect=202)
    _until_killed(cloud, answer["operation_id"], "snapshot")
    assert cloud.call("GET", "/v1/snapshots/snap1")["status"] == "creating"

    assert cloud.wait({"id": answer["operation_id"]})["status"] == "succeeded"
    assert cloud.call("GET", "/v1/snapshots/snap1")["status"] == "available"
    calls = [call for call in cloud.volume_backend.calls if call[0] in ("snapshot", "delete_snapshot")]
    volume_id = cloud.call("GET", "/v1/volumes/data1")["id"]
    assert calls == [("snapshot", volume_id, answer["id"]), ("delete_snapshot", answer["id"]),
                     ("snapshot", volume_id, answer["id"])]


def test_a_build_whose_boot_volume_copy_was_cut_short_resumes_to_an_active_server_on_whole_data(cloud):
    cloud.volume_backend.arm("create", WorkerKilled())
    operation = cloud.call("POST", "/v1/instances", {"name": "s1", "flavor": "bm.small", "image": "centos",
                                                     "networks": [{"network": "net1"}]}, expect=202)
    deadline = time.monotonic() + 10
    while not any(call[0] == "create" for call in cloud.volume_backend.calls):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (boot,) = cloud.call("GET", "/v1/volumes")
    assert boot["status"] == "creating" and cloud.volume_backend.exports == {}  # nothing served half-written

    assert cloud.wait(operation)["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/s1")
    boot = cloud.call("GET", f"/v1/volumes/{boot['id']}")
    assert server["status"] == "ACTIVE" and boot["status"] == "in-use"
    assert _head(cloud.volume_backend.path(boot["id"])) == IMAGE
