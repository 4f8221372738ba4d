"""`dpustack volume …` and `dpustack volume snapshot …`: what is sent, what `--wait` follows, what is shown."""

from __future__ import annotations

import json
from typing import Any

from cli_fake_api import FakeApi, Invoke


def _sent(fake: FakeApi) -> list[tuple[str, str, Any]]:
    """The requests made, but for the polls of operations."""
    return [(r.method, r.url.path, json.loads(r.content) if r.content else None) for r in fake.requests
            if not r.url.path.startswith("/v1/operations/")]


def _polled(fake: FakeApi) -> bool:
    return any(r.url.path.startswith("/v1/operations/") for r in fake.requests)


def _row(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if f" {label} " in line)


def test_create_answers_at_once_with_the_creating_volume_and_its_operation(dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("volume", "create", "data1", "--size", "10")
    assert result.exit_code == 0, result.output
    assert _sent(fake) == [("POST", "/v1/volumes", {"name": "data1", "size": 10})] and not _polled(fake)
    (volume,) = fake.store["volumes"].values()
    assert f"volume data1 is creating: operation {volume['operation_id']}" in result.stderr
    assert "creating" in _row(result.stdout, "status")


def test_create_from_an_image_with_wait_follows_the_operation_and_shows_the_available_volume(
        dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("volume", "create", "boot1", "--image", "cirros", "--size", "2", "--wait")
    assert result.exit_code == 0, result.output
    assert _sent(fake)[0] == ("POST", "/v1/volumes", {"name": "boot1", "size": 2, "image": "cirros"})
    assert _polled(fake) and "✓ write_data" in result.stderr and "✓ mark_available" in result.stderr
    assert "available" in _row(result.stdout, "status") and "cirros" in _row(result.stdout, "image_id")


def test_a_failed_create_with_wait_is_an_error_naming_the_step(dpustack: Invoke, fake: FakeApi) -> None:
    fake.fail_step = ("write_data", "cannot create a 10 GiB volume: No space left on device")
    result = dpustack("volume", "create", "data1", "--size", "10", "--wait")
    assert result.exit_code == 1
    assert "create volume data1 failed at step 'write_data': cannot create a 10 GiB volume" in result.stderr


def test_snapshot_then_restore_with_the_snapshot_size_as_json(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("volume", "create", "boot1", "--size", "2", "--wait")
    fake.find("volumes", "boot1").update(instance_id="s1", attachments=[
        {"id": "a1", "server_id": "s1", "server": "web1", "node": "dpu-bm-1", "function_id": "storage-1",
         "bdf": "0000:40:00.2"}])
    taken = dpustack("volume", "snapshot", "create", "boot1", "snap1", "--wait")
    assert taken.exit_code == 0, taken.output
    assert ("POST", "/v1/volumes/boot1/snapshots", {"name": "snap1"}) in _sent(fake)
    assert "✓ take_snapshot" in taken.stderr
    assert "available" in _row(taken.stdout, "status") and "dpu-bm-1" in _row(taken.stdout, "node")

    restored = dpustack("volume", "create", "restored", "--snapshot", "snap1", "--wait", "-f", "json")
    assert restored.exit_code == 0, restored.output
    volume = json.loads(restored.stdout)
    assert (volume["status"], volume["size"]) == ("available", 2)
    assert volume["snapshot_id"] == fake.find("snapshots", "snap1")["id"]


def test_snapshot_list_show_and_delete(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("volume", "create", "data1", "--size", "1", "--wait")
    dpustack("volume", "create", "data2", "--size", "1", "--wait")
    dpustack("volume", "snapshot", "create", "data1", "snap1", "--wait")
    dpustack("volume", "snapshot", "create", "data2", "snap2", "--wait")

    listed = json.loads(dpustack("volume", "snapshot", "list", "-f", "json").stdout)
    assert [s["name"] for s in listed] == ["snap1", "snap2"]
    of_one = json.loads(dpustack("volume", "snapshot", "list", "--volume", "data2", "-f", "json").stdout)
    assert [s["name"] for s in of_one] == ["snap2"]
    assert _sent(fake)[-1] == ("GET", "/v1/volumes/data2/snapshots", None)
    shown = dpustack("volume", "snapshot", "show", "snap1")
    assert "snap1" in _row(shown.stdout, "name") and "available" in _row(shown.stdout, "status")

    dpustack("volume", "create", "restored", "--snapshot", "snap1", "--wait")
    refused = dpustack("volume", "snapshot", "delete", "snap1")
    assert refused.exit_code == 1 and "restored" in refused.stderr and "(field: snapshot)" in refused.stderr
    deleted = dpustack("volume", "snapshot", "delete", "snap2", "--wait")
    assert deleted.exit_code == 0, deleted.output
    assert "delete snapshot snap2: snapshot deleted" in deleted.stdout
    assert [s["name"] for s in fake.store["snapshots"].values()] == ["snap1"]


def test_extend_and_flatten_follow_their_operation_and_show_the_volume(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("volume", "create", "data1", "--image", "cirros", "--size", "10", "--wait")
    extended = dpustack("volume", "extend", "data1", "--size", "20", "--wait")
    assert extended.exit_code == 0, extended.output
    assert ("POST", "/v1/volumes/data1/extend", {"size": 20}) in _sent(fake)
    assert "20" in _row(extended.stdout, "size") and "✓ extend" in extended.stderr
    smaller = dpustack("volume", "extend", "data1", "--size", "5")
    assert smaller.exit_code == 1 and "give a larger size (field: size)" in smaller.stderr

    flattened = dpustack("volume", "flatten", "data1", "--wait")
    assert flattened.exit_code == 0, flattened.output
    assert _row(flattened.stdout, "image_id").split()[-2] == "-"


def test_show_lists_where_the_volume_is_attached(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("volumes", name="data1", size=10, status="in-use", fault=None, image_id=None, snapshot_id=None,
             instance_id="s1", operation_id=None, bootable=False, project_id="p1", attachments=[
                 {"id": "att-1", "server_id": "s1", "server": "web1", "node": "dpu-bm-1",
                  "function_id": "storage-v1", "bdf": "0000:40:00.2"}])
    result = dpustack("volume", "show", "data1")
    assert result.exit_code == 0, result.output
    assert "in-use" in _row(result.stdout, "status")
    attachment = next(line for line in result.stdout.splitlines() if "web1" in line)
    for value in ("dpu-bm-1", "storage-v1", "0000:40:00.2", "att-1"):
        assert value in attachment
    listed = dpustack("volume", "list")
    assert "web1" in next(line for line in listed.stdout.splitlines() if "data1" in line)
