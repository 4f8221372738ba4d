"""`DELETE /v1/instances/{id}?force=true`: an admin forgets an instance whose node is gone.

The controller releases the node claim (CPU, RAM, PCI devices), the ports and
the volumes without calling the node, and the operation records that the
node's side was not cleaned.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from sqlalchemy import update

from dpustack.db.models import Instance, Operation, OperationStep
from dpustack.lab import pcitrees
from harness import BF2_FILTER, Cloud

@pytest.fixture
def bf2_cloud(tmp_path, database_url) -> Iterator[Cloud]:
    """dpu-bm-1 carries a BlueField-2 whose VFs are remote-managed."""
    cloud = Cloud(tmp_path, database_url, nodes=0)
    cloud.add_node("dpu-bm-1", cards=[pcitrees.bluefield2("MT0001")], pci={"information": BF2_FILTER})
    cloud.setup_basics()
    try:
        yield cloud
    finally:
        cloud.close()


def _server_with_everything(cloud: Cloud) -> dict:
    """s1 on dpu-bm-1: a remote-managed NIC (a VF), a port of its own, a boot volume and a data volume."""
    port = cloud.call("POST", "/v1/ports", {"network": "net1", "name": "mine"})
    op = cloud.build("s1", node="dpu-bm-1",
                     networks=[{"network": "net1", "vnic_type": "remote-managed"}, {"port": port["id"]}])
    assert op["status"] == "succeeded", op
    cloud.volume("data1", size=1)
    assert cloud.act("POST", "/v1/instances/s1/volumes", {"volume": "data1"})["status"] == "succeeded"
    return cloud.call("GET", "/v1/instances/s1")


def test_an_instance_whose_node_is_gone_is_released_by_a_force_delete(bf2_cloud):
    cloud = bf2_cloud
    server = _server_with_everything(cloud)
    (boot,) = [v for v in cloud.call("GET", "/v1/volumes") if v["bootable"]]
    boot_file = cloud.settings.volumes_dir / f"{boot['id']}.img"
    assert boot_file.exists()
    assert sorted(cloud.volume_backend.exports.values()) == sorted(server["volumes"])
    assert any(d["status"] == "allocated" for d in cloud.call("GET", "/v1/pci/devices?node=dpu-bm-1"))

    cloud.router.down.add("dpu-bm-1")  # the node is gone: an ordinary delete cannot finish
    failed = cloud.act("DELETE", "/v1/instances/s1")
    assert failed["status"] == "failed" and "dpu-bm-1" in failed["error"]
    member = cloud.call("POST", "/v1/tokens", {"project": "admin", "role": "member"})["token"]
    answer = cloud.api.delete("/v1/instances/s1", params={"force": "true"},
                              headers={"Authorization": f"Bearer {member}"})
    assert answer.status_code == 403 and answer.json()["error"]["field"] == "force"

    op = cloud.act("DELETE", "/v1/instances/s1?force=true")
    assert op["status"] == "succeeded" and op["action"] == "force_delete", op
    shown = cloud.call("GET", f"/v1/operations/{op['id']}")  # what `operation show` prints
    (step,) = shown["steps"]
    assert step["name"] == "release_without_node" and step["status"] == "done"
    assert step["detail"]["node"] == "dpu-bm-1" and step["detail"]["node_cleaned"] is False
    assert "dpu-bm-1 was not called" in step["detail"]["warning"]
    assert sorted(step["detail"]["ports"]) == sorted(server["ports"])
    assert sorted(step["detail"]["volumes"]) == sorted(server["volumes"])
    assert len(step["detail"]["pci_devices"]) == 1

    assert cloud.api.get("/v1/instances/s1").status_code == 404
    node = cloud.call("GET", "/v1/nodes/dpu-bm-1")
    assert (node["claimed_cpu"], node["claimed_mem"], node["instance_count"]) == (0, 0, 0)
    assert {d["status"] for d in cloud.call("GET", "/v1/pci/devices?node=dpu-bm-1")} == {"available"}
    (kept,) = cloud.call("GET", "/v1/ports")  # the NIC's own port is gone, the given one detached
    assert kept["name"] == "mine" and kept["instance_id"] is None and kept["status"] == "DOWN"
    assert kept["binding_host_id"] == ""
    (data,) = cloud.call("GET", "/v1/volumes")
    assert data["name"] == "data1" and data["status"] == "available" and data["instance_id"] is None
    assert data["attachments"] == []
    assert not boot_file.exists()
    assert cloud.volume_backend.exports == {}  # the node can no longer reach either volume

    # The node was never called: its agent still has the instance.
    cloud.router.down.clear()
    assert cloud.router.agents["dpu-bm-1"].get(f"/v1/instances/{server['id']}").status_code == 200


def test_a_force_delete_resumed_after_a_crash_releases_nothing_twice(bf2_cloud):
    cloud = bf2_cloud
    _server_with_everything(cloud)
    op = cloud.act("DELETE", "/v1/instances/s1?force=true")
    assert op["status"] == "succeeded" and op["action"] == "force_delete"
    # As if the worker died after the release committed but before it marked the step done.
    with cloud.context.transaction() as session:
        session.execute(update(OperationStep).where(OperationStep.operation_id == op["id"])
                        .values(status="running"))
        session.execute(update(Operation).where(Operation.id == op["id"])
                        .values(status="pending", finished_at=None))
    cloud.orchestrator.wake()
    again = cloud.wait(op)
    assert again["status"] == "succeeded", again
    assert again["steps"][0]["detail"]["node"] == "dpu-bm-1"  # the summary of the committed release
    assert again["steps"][0]["detail"]["node_cleaned"] is False
    node = cloud.call("GET", "/v1/nodes/dpu-bm-1")
    assert (node["claimed_cpu"], node["claimed_mem"], node["instance_count"]) == (0, 0, 0)
    assert {d["status"] for d in cloud.call("GET", "/v1/pci/devices?node=dpu-bm-1")} == {"available"}
    assert [v["name"] for v in cloud.call("GET", "/v1/volumes")] == ["data1"]


def test_a_force_delete_of_an_instance_that_never_got_a_node(cloud):
    cloud.setup_basics()
    cloud.call("POST", "/v1/flavors", {"name": "bm.huge", "vcpus": 4096, "ram": 16384, "disk": 40, "type": "bm"})
    failed = cloud.act("POST", "/v1/instances", {"name": "nowhere", "flavor": "bm.huge", "image": "centos",
                                                 "networks": [{"network": "net1"}]})
    assert failed["status"] == "failed" and "no valid node" in failed["error"]
    op = cloud.act("DELETE", "/v1/instances/nowhere?force=true")
    assert op["status"] == "succeeded"
    detail = op["steps"][0]["detail"]
    assert detail["node"] is None and detail["node_cleaned"] is None and "warning" not in detail
    assert cloud.call("GET", "/v1/instances") == [] and cloud.call("GET", "/v1/volumes") == []


def test_a_busy_instance_is_not_force_deleted(cloud):
    cloud.setup_basics()
    assert cloud.build("s1")["status"] == "succeeded"
    with cloud.context.transaction() as session:  # as while another action runs on it
        session.execute(update(Instance).values(task_state="reboot"))
    answer = cloud.api.delete("/v1/instances/s1", params={"force": "true"})
    assert answer.status_code == 409 and "busy" in answer.json()["error"]["message"]
