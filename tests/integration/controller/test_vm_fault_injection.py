"""The bare-metal fault-injection tests repeated for a VM: a failing hardware or hypervisor call at any
point of a build, a hot-plug or a delete on a vm node leaves nothing behind (no function, port, export
or domain) and a readable fault."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import faults
from dpustack.db.models import Node
from dpustack.drivers.hypervisor import DomainState
from faults import assert_clean

NODE = "dpu-vm-1"
CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}]
DRIVERS = ("functions", "switch", "storage", "hypervisor")
ONE_BM_NODE = pytest.mark.parametrize("cloud", [1], indirect=True)


@pytest.fixture
def vm_node(cloud):
    """The cloud's basics, a vm node and a VM flavor."""
    cloud.setup_basics()
    cloud.add_node(NODE, vm_cells=CELLS)
    cloud.call("POST", "/v1/flavors", {"name": "vm.small", "vcpus": 2, "ram": 1024, "disk": 1, "type": "vm"},
               expect=201)
    return cloud


def _build(cloud, name):
    return cloud.build(name, flavor="vm.small", node=NODE)


@ONE_BM_NODE
def test_a_fault_in_each_call_of_a_vm_build_in_turn_leaves_nothing_behind(vm_node):
    cloud = vm_node
    assert _build(cloud, "probe")["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, NODE)
    assert cloud.act("DELETE", "/v1/instances/probe")["status"] == "succeeded"
    assert {c[1] for c in calls} == set(DRIVERS), calls
    assert {(NODE, "hypervisor", "define", 0), (NODE, "hypervisor", "start", 0)} <= set(calls), calls

    for attempt, call in enumerate(calls):
        faults.clear(cloud, NODE)
        faults.arm(cloud, call)
        name = f"try{attempt}"
        op = _build(cloud, name)
        assert op["status"] == "failed", call
        server = cloud.call("GET", f"/v1/instances/{name}")
        assert server["status"] == "ERROR"
        assert "injected fault" in server["fault"]["message"], server["fault"]
        assert server["fault"]["step"] == "build_on_node"
        assert server["ports"] == [] and server["volumes"] == [] and server["node"] is None
        assert_clean(cloud, NODE)
        assert cloud.call("GET", "/v1/ports") == [] and cloud.call("GET", "/v1/volumes") == []
        assert cloud.volume_backend.exports == {}
        with cloud.context.sessions() as session:
            node = session.scalars(select(Node).where(Node.hostname == NODE)).one()
            assert (node.instance_count, node.claimed_cpu, node.claimed_mem) == (0, 0, 0), call
        assert cloud.act("DELETE", f"/v1/instances/{name}")["status"] == "succeeded"


@ONE_BM_NODE
@pytest.mark.parametrize("action,body", [
    ("nics", {"network": "net1"}),
    ("volumes", {"volume": "data1"}),
])
def test_a_fault_while_hot_plugging_into_a_running_vm_rolls_it_back(vm_node, action, body):
    cloud = vm_node
    cloud.volume("data1", size=1)
    assert _build(cloud, "v1")["status"] == "succeeded"
    uuid = cloud.call("GET", "/v1/instances/v1")["id"]
    drivers = cloud.drivers(NODE)

    def held():
        return (len(drivers.functions.list()), len(drivers.switch.list_ports()), len(drivers.storage.list()),
                sorted(drivers.hypervisor.device_addresses(uuid)))

    before, exports_before = held(), dict(cloud.volume_backend.exports)
    faults.clear(cloud, NODE)
    assert cloud.act("POST", f"/v1/instances/v1/{action}", body)["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, NODE)
    assert (NODE, "hypervisor", "attach", 0) in calls, calls
    added = cloud.call("GET", "/v1/instances/v1")["ports"][-1] if action == "nics" else "data1"
    assert cloud.act("DELETE", f"/v1/instances/v1/{action}/{added}")["status"] == "succeeded"

    for call in calls:
        faults.clear(cloud, NODE)
        faults.arm(cloud, call)
        op = cloud.act("POST", f"/v1/instances/v1/{action}", body)
        assert op["status"] == "failed" and "injected fault" in op["error"], call
        assert held() == before, call
        assert drivers.hypervisor.state(uuid) == DomainState.RUNNING  # the guest ran on
        server = cloud.call("GET", "/v1/instances/v1")
        assert server["status"] == "ERROR" and "injected fault" in server["fault"]["message"]
        assert len(server["ports"]) == 1 and len(server["volumes"]) == 1
        data1 = cloud.call("GET", "/v1/volumes/data1")
        assert data1["status"] == "available" and data1["attachments"] == [] and data1["operation_id"] is None
        assert cloud.volume_backend.exports == exports_before
        assert cloud.act("POST", "/v1/instances/v1/start")["status"] == "succeeded"  # back from ERROR


@ONE_BM_NODE
def test_a_failed_vm_delete_keeps_the_fault_and_deleting_again_removes_the_domain(vm_node):
    cloud = vm_node
    assert _build(cloud, "v1")["status"] == "succeeded"
    cloud.drivers(NODE).hypervisor.faults.arm("undefine")
    op = cloud.act("DELETE", "/v1/instances/v1")
    assert op["status"] == "failed"
    server = cloud.call("GET", "/v1/instances/v1")
    assert server["status"] == "ERROR" and "injected fault" in server["fault"]["message"]
    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"
    assert_clean(cloud, NODE)
    assert cloud.call("GET", "/v1/ports") == [] and cloud.call("GET", "/v1/volumes") == []
