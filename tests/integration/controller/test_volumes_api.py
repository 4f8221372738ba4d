"""Volumes and their snapshots through the controller API: every long step an operation, attachments
served through the volume backend's exports, refusals that change nothing, and project isolation."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from dpustack.db.models import Operation

GiB = 1 << 30


def _count_operations(cloud) -> int:
    with cloud.context.sessions() as session:
        return session.scalar(select(func.count()).select_from(Operation))


def _error(answer) -> tuple[int, str | None, str]:
    error = answer.json()["error"]
    return answer.status_code, error.get("field"), error["message"]


def _write(cloud, volume: dict, data: bytes, offset: int = 0) -> None:
    """What a server writing to its disk leaves in the volume."""
    with cloud.volume_backend.path(volume["id"]).open("r+b") as disk:
        disk.seek(offset)
        disk.write(data)


def _read(path, length: int, offset: int = 0) -> bytes:
    with path.open("rb") as disk:
        disk.seek(offset)
        return disk.read(length)


def test_a_new_volume_is_creating_until_its_operation_wrote_the_data(cloud):
    answer = cloud.call("POST", "/v1/volumes", {"name": "data1", "size": 10}, expect=202)
    assert answer["status"] == "creating" and answer["operation_id"] and answer["attachments"] == []

    operation = cloud.wait({"id": answer["operation_id"]})
    assert operation["status"] == "succeeded" and operation["action"] == "create_volume"
    assert operation["instance_id"] is None
    assert [s["name"] for s in operation["steps"]] == ["write_data", "mark_available"]
    assert operation["steps"][0]["detail"] == {"volume": answer["id"], "size": 10, "image": None, "snapshot": None}
    volume = cloud.call("GET", "/v1/volumes/data1")
    assert volume["status"] == "available" and volume["size"] == 10 and volume["operation_id"] is None
    assert volume["bootable"] is False and volume["fault"] is None
    assert cloud.volume_backend.path(volume["id"]).stat().st_size == 10 * GiB


def test_a_volume_from_an_image_shares_it_until_flattened(cloud):
    cloud.setup_basics(image_bytes=b"\x01" * 3 * 512)
    boot = cloud.volume("boot1", image="centos")  # size: the image's disk, rounded up to whole GiB
    assert (boot["size"], boot["bootable"], boot["image_id"]) == (1, True, cloud.call("GET", "/v1/images/centos")["id"])
    assert _read(cloud.volume_backend.path(boot["id"]), 1536) == b"\x01" * 1536

    operation = cloud.act("POST", "/v1/volumes/boot1/flatten")
    assert operation["status"] == "succeeded" and operation["action"] == "flatten_volume"
    assert ("flatten", boot["id"]) in cloud.volume_backend.calls
    assert cloud.call("GET", "/v1/volumes/boot1")["image_id"] is None
    status, field, message = _error(cloud.api.post("/v1/volumes/boot1/flatten"))
    assert (status, field) == (409, "volume") and "nothing to flatten" in message
    cloud.call("DELETE", "/v1/images/centos", expect=204)  # nothing shares it: gone at once
    assert cloud.call("GET", "/v1/volumes/boot1")["status"] == "available"


def test_deleting_an_image_volumes_share_flattens_them_first_in_an_operation(cloud):
    from dpustack.db.models import Volume

    cloud.setup_basics(image_bytes=b"\x01" * 3 * 512)
    image = cloud.call("GET", "/v1/images/centos")
    boot = cloud.volume("boot1", image="centos")
    _write(cloud, boot, b"written by its server", offset=2048)
    other = cloud.volume("boot2", image="centos")

    # a volume busy with another operation: a 409 naming it, nothing changed
    with cloud.context.transaction() as session:  # as while it is extended, say
        busy = session.scalars(select(Operation.id).order_by(Operation.created_at.desc())).first()
        session.get_one(Volume, other["id"]).operation_id = busy
    operations = _count_operations(cloud)
    status, field, message = _error(cloud.api.delete("/v1/images/centos"))
    assert (status, field) == (409, "volume") and "boot2" in message and busy in message
    assert cloud.call("GET", "/v1/images/centos")["status"] == "active"
    assert _count_operations(cloud) == operations
    assert cloud.call("GET", "/v1/volumes/boot1")["operation_id"] is None
    with cloud.context.transaction() as session:
        session.get_one(Volume, other["id"]).operation_id = None

    # a failed flatten keeps the image, usable again, and says why
    cloud.volume_backend.arm("flatten", RuntimeError("the storage pool is full"))
    failed = cloud.act("DELETE", "/v1/images/centos")
    assert failed["status"] == "failed" and "the storage pool is full" in failed["error"]
    assert cloud.call("GET", "/v1/images/centos")["status"] == "active"
    assert cloud.settings.images_dir.joinpath(image["id"]).exists()

    started = cloud.call("DELETE", "/v1/images/centos", expect=202)
    assert started["action"] == "delete_image" and started["instance_id"] is None
    operation = cloud.wait(started)
    assert operation["status"] == "succeeded", operation
    assert [s["name"] for s in operation["steps"]] == ["flatten_volumes", "delete_image"]
    assert {("flatten", boot["id"]), ("flatten", other["id"])} <= set(cloud.volume_backend.calls)
    assert cloud.api.get("/v1/images/centos").status_code == 404
    assert not cloud.settings.images_dir.joinpath(image["id"]).exists()
    for name, volume in (("boot1", boot), ("boot2", other)):
        shown = cloud.call("GET", f"/v1/volumes/{name}")
        assert (shown["image_id"], shown["status"], shown["operation_id"]) == (None, "available", None)
    path = cloud.volume_backend.path(boot["id"])
    assert _read(path, 1536) == b"\x01" * 1536 and _read(path, 21, offset=2048) == b"written by its server"


def test_an_image_being_deleted_makes_no_new_volume_or_server(cloud):
    from dpustack.db.models import Image

    cloud.setup_basics()
    with cloud.context.transaction() as session:  # as while its delete operation flattens volumes
        session.scalars(select(Image)).one().status = "deleting"
    for path, body in (("/v1/volumes", {"name": "boot1", "image": "centos"}),
                       ("/v1/instances", {"name": "web1", "flavor": "bm.small", "image": "centos",
                                          "networks": [{"network": "net1"}]})):
        status, field, message = _error(cloud.api.post(path, json=body))
        assert (status, field) == (409, "image") and "centos" in message and "being deleted" in message
    status, _, message = _error(cloud.api.delete("/v1/images/centos"))
    assert status == 409 and "already being deleted" in message


def test_a_snapshot_is_a_point_in_time_source_for_new_volumes(cloud):
    data = cloud.volume("data1", size=2)
    _write(cloud, data, b"before the snapshot")
    snapshot = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "snap1"}, expect=202)
    assert snapshot["status"] == "creating" and snapshot["volume_id"] == data["id"] and snapshot["size"] == 2
    operation = cloud.wait({"id": snapshot["operation_id"]})
    assert operation["status"] == "succeeded" and operation["action"] == "create_snapshot"
    assert [s["name"] for s in operation["steps"]] == ["take_snapshot", "mark_available"]
    _write(cloud, data, b"after the snapshot!")

    shown = cloud.call("GET", "/v1/snapshots/snap1")
    assert shown["status"] == "available" and shown["operation_id"] is None and shown["instance_id"] is None
    assert [s["id"] for s in cloud.call("GET", "/v1/volumes/data1/snapshots")] == [shown["id"]]
    assert [s["name"] for s in cloud.call("GET", "/v1/snapshots")] == ["snap1"]

    status, field, _ = _error(cloud.api.post("/v1/volumes", json={"name": "small", "size": 1, "snapshot": "snap1"}))
    assert (status, field) == (400, "size")
    restored = cloud.volume("restored", snapshot="snap1")
    assert restored["size"] == 2 and restored["snapshot_id"] == shown["id"] and restored["status"] == "available"
    assert _read(cloud.volume_backend.path(restored["id"]), 19) == b"before the snapshot"
    assert cloud.volume("bigger", snapshot="snap1", size=5)["size"] == 5

    status, field, message = _error(cloud.api.delete("/v1/snapshots/snap1"))
    assert (status, field) == (409, "snapshot") and "restored" in message and "bigger" in message
    status, field, message = _error(cloud.api.delete("/v1/volumes/data1"))
    assert (status, field) == (409, "volume") and "snap1" in message
    cloud.call("DELETE", "/v1/volumes/bigger", expect=204)
    assert cloud.act("POST", "/v1/volumes/restored/flatten")["status"] == "succeeded"
    assert cloud.call("GET", "/v1/volumes/restored")["snapshot_id"] is None

    deleted = cloud.act("DELETE", "/v1/snapshots/snap1")
    assert deleted["status"] == "succeeded" and deleted["action"] == "delete_snapshot"
    assert cloud.api.get("/v1/snapshots/snap1").status_code == 404
    assert not cloud.volume_backend.snapshot_path(shown["id"]).exists()
    cloud.call("DELETE", "/v1/volumes/data1", expect=204)
    assert not cloud.volume_backend.path(data["id"]).exists()


def test_attaching_serves_the_volume_through_its_own_export_and_detaching_ends_it(cloud):
    cloud.setup_basics()
    assert cloud.build("web1", node="dpu-bm-1")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/web1")
    (boot,) = [cloud.call("GET", f"/v1/volumes/{v}") for v in server["volumes"]]
    (boot_attachment,) = boot["attachments"]
    assert boot_attachment["server"] == "web1" and boot_attachment["node"] == "dpu-bm-1"
    assert cloud.volume_backend.exports == {boot_attachment["id"]: boot["id"]}

    data = cloud.volume("data1", size=1)
    operation = cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})
    assert operation["status"] == "succeeded", operation
    data = cloud.call("GET", "/v1/volumes/data1")
    (attachment,) = data["attachments"]
    assert data["status"] == "in-use" and data["instance_id"] == server["id"]
    assert attachment == {"id": attachment["id"], "server_id": server["id"], "server": "web1", "node": "dpu-bm-1",
                          "function_id": f"storage-{data['id']}", "bdf": attachment["bdf"]}
    assert attachment["bdf"] and attachment["id"] not in (boot_attachment["id"], data["id"])
    assert cloud.volume_backend.exports[attachment["id"]] == data["id"]
    storage = {a.volume_id: a for a in cloud.drivers("dpu-bm-1").storage.list()}
    assert storage[data["id"]].uri == cloud.volume_backend.path(data["id"]).as_uri()  # what export answered

    status, field, _ = _error(cloud.api.delete("/v1/volumes/data1"))
    assert (status, field) == (409, "volume")

    # The export ends only once the node has let go of the volume.
    held_by_node_at_unexport = []
    unexport = cloud.volume_backend.unexport

    def watched_unexport(attachment_id: str) -> None:
        held_by_node_at_unexport.append([a.volume_id for a in cloud.drivers("dpu-bm-1").storage.list()])
        unexport(attachment_id)

    cloud.volume_backend.unexport = watched_unexport  # type: ignore[method-assign]
    assert cloud.act("DELETE", "/v1/instances/web1/volumes/data1")["status"] == "succeeded"
    assert held_by_node_at_unexport == [[boot["id"]]]
    data = cloud.call("GET", "/v1/volumes/data1")
    assert data["status"] == "available" and data["attachments"] == [] and data["instance_id"] is None
    assert cloud.volume_backend.exports == {boot_attachment["id"]: boot["id"]}

    assert cloud.act("DELETE", "/v1/instances/web1")["status"] == "succeeded"
    assert cloud.volume_backend.exports == {}


def test_the_files_backend_refuses_a_snapshot_of_an_attached_volume_and_the_snapshot_says_why(cloud):
    # Live snapshots need the qcow2 storage service (tests/integration/storage/test_volumes_api_qcow2.py).
    cloud.setup_basics()
    assert cloud.build("web1", node="dpu-bm-2")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/web1")
    data = cloud.volume("data1", size=1)
    assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
    (attachment,) = cloud.call("GET", "/v1/volumes/data1")["attachments"]
    exports = dict(cloud.volume_backend.exports)

    snapshot = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "live"}, expect=202)
    assert snapshot["instance_id"] == server["id"] and snapshot["node"] == "dpu-bm-2"
    operation = cloud.wait({"id": snapshot["operation_id"]})
    assert operation["status"] == "failed" and operation["error"].startswith("take_snapshot: ")
    failed = cloud.call("GET", "/v1/snapshots/live")
    assert failed["status"] == "error" and failed["fault"]["step"] == "take_snapshot"
    assert failed["fault"]["message"] == (f"volume {data['id']} is exported ({attachment['id']}); the files "
                                          "backend snapshots only volumes that no DPU uses")
    assert not cloud.volume_backend.snapshot_path(snapshot["id"]).exists()
    assert cloud.volume_backend.exports == exports  # the volume is still served, untouched
    assert cloud.call("GET", "/v1/volumes/data1")["status"] == "in-use"

    # detached, the same volume is snapshotted; the snapshot in error is deleted like any other
    assert cloud.act("DELETE", "/v1/instances/web1/volumes/data1")["status"] == "succeeded"
    assert cloud.act("DELETE", "/v1/snapshots/live")["status"] == "succeeded"
    snapshot = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "offline"}, expect=202)
    assert cloud.wait({"id": snapshot["operation_id"]})["status"] == "succeeded"
    shown = cloud.call("GET", "/v1/snapshots/offline")
    assert (shown["status"], shown["instance_id"], shown["node"]) == ("available", None, None)


def test_extend_grows_a_volume_attached_or_not_and_holds_it_meanwhile(cloud):
    cloud.setup_basics()
    assert cloud.build("web1")["status"] == "succeeded"
    cloud.volume("data1", size=10)
    for size in (10, 5):
        status, field, message = _error(cloud.api.post("/v1/volumes/data1/extend", json={"size": size}))
        assert (status, field) == (400, "size") and "10 GiB" in message

    proceed, extending = threading.Event(), threading.Event()
    extend = cloud.volume_backend.extend

    def slow_extend(volume_id: str, size: int) -> None:
        extending.set()
        assert proceed.wait(10)
        extend(volume_id, size)

    cloud.volume_backend.extend = slow_extend  # type: ignore[method-assign]
    try:
        operation = cloud.call("POST", "/v1/volumes/data1/extend", {"size": 20}, expect=202)
        assert extending.wait(10)
        volume = cloud.call("GET", "/v1/volumes/data1")
        assert volume["status"] == "extending" and volume["operation_id"] == operation["id"]
        before = _count_operations(cloud)
        for method, path, body in (("POST", "/v1/volumes/data1/extend", {"size": 30}),
                                   ("POST", "/v1/volumes/data1/flatten", None),
                                   ("POST", "/v1/volumes/data1/snapshots", {"name": "s"}),
                                   ("POST", "/v1/instances/web1/volumes", {"volume": "data1"}),
                                   ("DELETE", "/v1/volumes/data1", None)):
            answer = cloud.api.request(method, path, json=body)
            assert _error(answer)[:2] == (409, "volume"), (path, answer.text)
        assert _count_operations(cloud) == before
    finally:
        proceed.set()
    assert cloud.wait(operation)["status"] == "succeeded"
    volume = cloud.call("GET", "/v1/volumes/data1")
    assert (volume["size"], volume["status"], volume["operation_id"]) == (20, "available", None)
    assert cloud.volume_backend.path(volume["id"]).stat().st_size == 20 * GiB
    cloud.volume_backend.extend = extend  # type: ignore[method-assign]

    assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
    assert cloud.act("POST", "/v1/volumes/data1/extend", {"size": 25})["status"] == "succeeded"
    volume = cloud.call("GET", "/v1/volumes/data1")
    assert (volume["size"], volume["status"], len(volume["attachments"])) == (25, "in-use", 1)
    # exported again after the extend: a live extend drops and re-adds the exports around the resize
    extended_at = cloud.volume_backend.calls.index(("extend", volume["id"], 25))
    assert cloud.volume_backend.calls[extended_at + 1] == ("export", volume["id"], volume["attachments"][0]["id"])


def test_an_attached_volume_whose_extend_fails_is_served_again_or_in_error_saying_it_is_not(cloud):
    from dpustack.errors import DriverError

    cloud.setup_basics()
    assert cloud.build("web1")["status"] == "succeeded"
    volume = cloud.volume("data1", size=1)
    assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
    (attachment,) = cloud.call("GET", "/v1/volumes/data1")["attachments"]

    cloud.volume_backend.arm("extend", DriverError("the storage node is full"))
    operation = cloud.act("POST", "/v1/volumes/data1/extend", {"size": 2})
    assert operation["status"] == "failed" and "the storage node is full" in operation["error"]
    shown = cloud.call("GET", "/v1/volumes/data1")
    assert (shown["size"], shown["status"], shown["fault"]) == (1, "in-use", None)
    assert cloud.volume_backend.calls[-1] == ("export", volume["id"], attachment["id"])
    assert cloud.volume_backend.exports[attachment["id"]] == volume["id"]

    cloud.volume_backend.arm("extend", DriverError("lost the storage daemon during block_resize"))
    cloud.volume_backend.arm("export", DriverError("no storage daemon answers"))
    operation = cloud.act("POST", "/v1/volumes/data1/extend", {"size": 2})
    assert operation["status"] == "failed"
    shown = cloud.call("GET", "/v1/volumes/data1")
    assert shown["status"] == "error" and shown["fault"]["step"] == "extend"
    assert shown["fault"]["message"] == ("lost the storage daemon during block_resize; the volume is not served "
                                         "to its server: no storage daemon answers")
    assert shown["attachments"] == [attachment]  # still attached: the user sees where it is missing


def test_a_failing_backend_leaves_a_readable_fault_and_no_partial_data(cloud):
    from dpustack.errors import DriverError

    cloud.volume("data1", size=1)
    cloud.volume_backend.arm("snapshot", DriverError("the storage node is full"))
    snapshot = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "snap1"}, expect=202)
    assert cloud.wait({"id": snapshot["operation_id"]})["status"] == "failed"
    failed = cloud.call("GET", "/v1/snapshots/snap1")
    assert failed["status"] == "error" and failed["fault"]["message"] == "the storage node is full"
    assert failed["fault"]["step"] == "take_snapshot"
    assert ("delete_snapshot", snapshot["id"]) in cloud.volume_backend.calls  # the undo removed what was left
    assert cloud.act("DELETE", "/v1/snapshots/snap1")["status"] == "succeeded"  # an error can be deleted

    cloud.volume_backend.arm("extend", DriverError("the storage node is full"))
    operation = cloud.act("POST", "/v1/volumes/data1/extend", {"size": 2})
    assert operation["status"] == "failed" and "the storage node is full" in operation["error"]
    volume = cloud.call("GET", "/v1/volumes/data1")
    assert (volume["size"], volume["status"], volume["operation_id"]) == (1, "available", None)

    cloud.volume_backend.arm("create", DriverError("the storage node is full"))
    answer = cloud.call("POST", "/v1/volumes", {"name": "data2", "size": 1}, expect=202)
    assert cloud.wait({"id": answer["operation_id"]})["status"] == "failed"
    volume = cloud.call("GET", "/v1/volumes/data2")
    assert volume["status"] == "error" and volume["fault"]["message"] == "the storage node is full"
    assert not cloud.volume_backend.path(volume["id"]).exists()
    assert not list(cloud.settings.volumes_dir.glob("*.part"))


def test_bad_requests_name_their_field_and_change_nothing(cloud):
    cloud.setup_basics()
    cloud.volume("data1", size=1)
    cloud.call("POST", "/v1/images", {"name": "empty"})  # no data uploaded
    before = (_count_operations(cloud), len(cloud.call("GET", "/v1/volumes")))
    cases = [
        ("POST", "/v1/volumes", {"name": "v"}, 400, "size"),
        ("POST", "/v1/volumes", {"name": "v", "size": 0}, 400, "size"),
        ("POST", "/v1/volumes", {"name": "v", "size": "big"}, 400, "size"),
        ("POST", "/v1/volumes", {"name": "v", "size": 1, "image": "centos", "snapshot": "s"}, 404, "snapshot"),
        ("POST", "/v1/volumes", {"name": "v", "size": 1, "image": "nope"}, 404, "image"),
        ("POST", "/v1/volumes", {"name": "v", "size": 1, "image": "empty"}, 409, "image"),
        ("POST", "/v1/volumes", {"name": "v", "snapshot": "nope"}, 404, "snapshot"),
        ("POST", "/v1/volumes", {"name": "data1", "size": 1}, 409, "name"),
        ("POST", "/v1/volumes", {"name": "v", "size": 1, "colour": "red"}, 400, "colour"),
        ("POST", "/v1/volumes/nope/extend", {"size": 2}, 404, "volume"),
        ("POST", "/v1/volumes/data1/extend", {}, 400, "size"),
        ("POST", "/v1/volumes/data1/extend", {"size": 1}, 400, "size"),
        ("POST", "/v1/volumes/data1/flatten", None, 409, "volume"),
        ("POST", "/v1/volumes/data1/snapshots", {"name": ""}, 400, "name"),
        ("POST", "/v1/volumes/nope/snapshots", {"name": "s"}, 404, "volume"),
        ("GET", "/v1/volumes/nope/snapshots", None, 404, "volume"),
        ("GET", "/v1/snapshots/nope", None, 404, "snapshot"),
        ("DELETE", "/v1/snapshots/nope", None, 404, "snapshot"),
    ]
    for method, path, body, status, field in cases:
        answer = cloud.api.request(method, path, json=body)
        assert _error(answer)[:2] == (status, field), (method, path, body, answer.text)
    assert (_count_operations(cloud), len(cloud.call("GET", "/v1/volumes"))) == before

    snapshot = cloud.call("POST", "/v1/volumes/data1/snapshots", {"name": "s"}, expect=202)
    cloud.wait({"id": snapshot["operation_id"]})
    answer = cloud.api.post("/v1/volumes", json={"name": "v", "size": 1, "image": "centos", "snapshot": "s"})
    assert _error(answer)[:2] == (400, "snapshot")
    answer = cloud.api.post("/v1/volumes/data1/snapshots", json={"name": "s"})
    assert _error(answer)[:2] == (409, "name")


def test_projects_see_and_use_only_their_own_volumes_and_snapshots(cloud):
    cloud.call("POST", "/v1/projects", {"name": "blue"})
    cloud.call("POST", "/v1/projects", {"name": "red"})
    blue = cloud.call("POST", "/v1/tokens", {"project": "blue"})["token"]
    red = cloud.call("POST", "/v1/tokens", {"project": "red"})["token"]
    volume = cloud.volume("secret", size=1, token=blue)
    snapshot = cloud.call("POST", "/v1/volumes/secret/snapshots", {"name": "snap"}, token=blue, expect=202)
    cloud.wait({"id": snapshot["operation_id"]}, token=blue)

    assert cloud.call("GET", "/v1/volumes", token=red) == []
    assert cloud.call("GET", "/v1/snapshots", token=red) == []
    red_header = {"Authorization": f"Bearer {red}"}
    for method, path, body, field in (
            ("GET", f"/v1/volumes/{volume['id']}", None, "volume"),
            ("GET", f"/v1/volumes/{volume['id']}/snapshots", None, "volume"),
            ("GET", f"/v1/snapshots/{snapshot['id']}", None, "snapshot"),
            ("POST", f"/v1/volumes/{volume['id']}/extend", {"size": 2}, "volume"),
            ("POST", f"/v1/volumes/{volume['id']}/flatten", None, "volume"),
            ("POST", f"/v1/volumes/{volume['id']}/snapshots", {"name": "mine"}, "volume"),
            ("POST", "/v1/volumes", {"name": "copy", "snapshot": snapshot["id"]}, "snapshot"),
            ("DELETE", f"/v1/snapshots/{snapshot['id']}", None, "snapshot"),
            ("DELETE", f"/v1/volumes/{volume['id']}", None, "volume")):
        answer = cloud.api.request(method, path, json=body, headers=red_header)
        assert _error(answer)[:2] == (404, field), (method, path, answer.text)

    assert [s["name"] for s in cloud.call("GET", "/v1/snapshots", token=blue)] == ["snap"]
    assert {s["name"] for s in cloud.call("GET", "/v1/snapshots")} == {"snap"}  # an admin sees every project's
    copy = cloud.volume("copy", snapshot="snap", token=blue)
    assert copy["project_id"] == volume["project_id"]
