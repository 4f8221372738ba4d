"""A failing hardware call at any point of an action leaves nothing behind and a readable fault."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import faults
from dpustack.db.models import Node
from faults import assert_clean

DRIVERS = ("functions", "switch", "storage", "bmc")


def _assert_node_clean(cloud, node):
    assert_clean(cloud, node)
    assert cloud.drivers(node).bmc.power_state() == "off"


def test_a_fault_in_each_build_call_in_turn_leaves_nothing_behind(cloud):
    cloud.setup_basics()
    assert cloud.build("probe", node="dpu-bm-1")["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, "dpu-bm-1")
    assert cloud.act("DELETE", "/v1/instances/probe")["status"] == "succeeded"
    assert {c[1] for c in calls} == set(DRIVERS), calls

    for attempt, call in enumerate(calls):
        faults.clear(cloud, "dpu-bm-1")
        faults.arm(cloud, call)
        name = f"try{attempt}"
        op = cloud.build(name, node="dpu-bm-1")
        assert op["status"] == "failed", call
        server = cloud.call("GET", f"/v1/instances/{name}")
        assert server["status"] == "ERROR"
        assert "injected fault" in server["fault"]["message"], server["fault"]
        assert server["fault"]["step"] == "build_on_node"
        assert server["ports"] == [] and server["volumes"] == [] and server["node"] is None
        _assert_node_clean(cloud, "dpu-bm-1")
        assert cloud.call("GET", "/v1/ports") == []
        assert [v for v in cloud.call("GET", "/v1/volumes")] == []
        assert cloud.volume_backend.exports == {}  # the undone build's volume is served no more
        with cloud.context.sessions() as session:
            node = session.scalars(select(Node).where(Node.hostname == "dpu-bm-1")).one()
            assert (node.instance_count, node.claimed_cpu, node.claimed_mem) == (0, 0, 0)
        assert cloud.act("DELETE", f"/v1/instances/{name}")["status"] == "succeeded"


@pytest.mark.parametrize("action,body", [
    ("nics", {"network": "net1"}),
    ("volumes", {"volume": "data1"}),
])
def test_a_fault_while_adding_a_device_rolls_it_back(cloud, action, body):
    cloud.setup_basics()
    cloud.volume("data1", size=1)
    cloud.build("web1", node="dpu-bm-1")
    drivers = cloud.drivers("dpu-bm-1")
    before = (len(drivers.functions.list()), len(drivers.switch.list_ports()), len(drivers.storage.list()))
    exports_before = dict(cloud.volume_backend.exports)  # the boot volume's
    faults.clear(cloud, "dpu-bm-1")
    assert cloud.act("POST", f"/v1/instances/web1/{action}", body)["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, "dpu-bm-1")
    last = cloud.call("GET", "/v1/instances/web1")
    added = last["ports"][-1] if action == "nics" else "data1"
    assert cloud.act("DELETE", f"/v1/instances/web1/{action}/{added}")["status"] == "succeeded"

    for call in calls:
        faults.clear(cloud, "dpu-bm-1")
        faults.arm(cloud, call)
        op = cloud.act("POST", f"/v1/instances/web1/{action}", body)
        assert op["status"] == "failed" and "injected fault" in op["error"], call
        after = (len(drivers.functions.list()), len(drivers.switch.list_ports()), len(drivers.storage.list()))
        assert after == before, call
        server = cloud.call("GET", "/v1/instances/web1")
        assert server["status"] == "ERROR" and "injected fault" in server["fault"]["message"]
        assert len(server["ports"]) == 1 and len(server["volumes"]) == 1
        data1 = cloud.call("GET", "/v1/volumes/data1")
        assert data1["status"] == "available" and data1["attachments"] == [] and data1["operation_id"] is None
        assert cloud.volume_backend.exports == exports_before
        # A start brings the instance back from ERROR.
        assert cloud.act("POST", "/v1/instances/web1/start")["status"] == "succeeded"


def test_an_unreachable_node_fails_the_build_and_a_later_delete_cleans_up(cloud):
    cloud.setup_basics()
    cloud.router.down.add("dpu-bm-1")
    op = cloud.build("web1", node="dpu-bm-1")
    assert op["status"] == "failed"
    fault = cloud.call("GET", "/v1/instances/web1")["fault"]
    assert "dpu-bm-1" in fault["message"] and "unreachable" in fault["message"]
    assert "delete the instance to clean up" in fault["message"]
    # The node could not confirm the undo, so the claim and ports stay for the delete to release.
    assert [s["status"] for s in op["steps"]][:4] == ["done", "done", "done", "undo_failed"]
    cloud.router.down.clear()
    assert cloud.act("DELETE", "/v1/instances/web1")["status"] == "succeeded"
    _assert_node_clean(cloud, "dpu-bm-1")
    assert cloud.call("GET", "/v1/ports") == [] and cloud.call("GET", "/v1/volumes") == []
    assert cloud.call("GET", "/v1/nodes/dpu-bm-1")["instance_count"] == 0


def test_a_failed_delete_keeps_the_fault_and_deleting_again_finishes(cloud):
    cloud.setup_basics()
    cloud.build("web1", node="dpu-bm-1")
    cloud.drivers("dpu-bm-1").functions.faults.arm("delete")
    op = cloud.act("DELETE", "/v1/instances/web1")
    assert op["status"] == "failed"
    server = cloud.call("GET", "/v1/instances/web1")
    assert server["status"] == "ERROR" and "injected fault" in server["fault"]["message"]
    assert cloud.act("DELETE", "/v1/instances/web1")["status"] == "succeeded"
    _assert_node_clean(cloud, "dpu-bm-1")
    assert cloud.call("GET", "/v1/ports") == [] and cloud.call("GET", "/v1/volumes") == []
