"""The bare-metal fault-injection tests repeated for a VM: a failing hardware or hypervisor call at any
point of a build, a hot-plug or a delete on a vm node leaves nothing behind (no function, port, export
or domain) and a readable fault."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dpustack.db.models import Node
from dpustack.drivers.hypervisor import DomainState

NODE = "dpu-vm-1"
CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}]
DRIVERS = ("functions", "switch", "storage", "hypervisor")
READS = ("get", "list", "list_ports", "power_state", "hw_info", "validate", "serial_console", "state",
         "topology", "domains", "device_addresses")
ONE_BM_NODE = pytest.mark.parametrize("cloud", [1], indirect=True)


@pytest.fixture
def vm_node(cloud):
    """The cloud's basics, a vm node and a VM flavor."""
    cloud.setup_basics()
    cloud.add_node(NODE, vm_cells=CELLS)
    cloud.call("POST", "/v1/flavors", {"name": "vm.small", "vcpus": 2, "ram": 1024, "disk": 1, "type": "vm"},
               expect=201)
    return cloud


def _faults(cloud):
    drivers = cloud.drivers(NODE)
    return {name: getattr(drivers, name).faults for name in DRIVERS}


def _mutating_calls(cloud):
    """Every (driver, operation, nth) the last action made on the node, but reads."""
    calls = []
    for driver, faults in _faults(cloud).items():
        seen: dict[str, int] = {}
        for operation in faults.calls:
            if operation not in READS:
                calls.append((driver, operation, seen.get(operation, 0)))
            seen[operation] = seen.get(operation, 0) + 1
    return calls


def _clear(cloud):
    for faults in _faults(cloud).values():
        faults.clear()


def _build(cloud, name):
    return cloud.build(name, flavor="vm.small", node=NODE)


def _assert_node_clean(cloud):
    drivers = cloud.drivers(NODE)
    assert drivers.functions.list() == []
    assert drivers.switch.list_ports() == []
    assert drivers.storage.list() == []
    assert drivers.hypervisor.domains() == []
    assert cloud.router.agents[NODE].get("/v1/instances").json() == []


@ONE_BM_NODE
def test_a_fault_in_each_call_of_a_vm_build_in_turn_leaves_nothing_behind(vm_node):
    cloud = vm_node
    assert _build(cloud, "probe")["status"] == "succeeded"
    calls = _mutating_calls(cloud)
    assert cloud.act("DELETE", "/v1/instances/probe")["status"] == "succeeded"
    assert {c[0] for c in calls} == set(DRIVERS), calls
    assert {("hypervisor", "define", 0), ("hypervisor", "start", 0)} <= set(calls), calls

    for attempt, (driver, operation, nth) in enumerate(calls):
        _clear(cloud)
        getattr(cloud.drivers(NODE), driver).faults.arm(operation, skip=nth)
        name = f"try{attempt}"
        op = _build(cloud, name)
        assert op["status"] == "failed", (driver, operation, nth)
        server = cloud.call("GET", f"/v1/instances/{name}")
        assert server["status"] == "ERROR"
        assert "injected fault" in server["fault"]["message"], server["fault"]
        assert server["fault"]["step"] == "build_on_node"
        assert server["ports"] == [] and server["volumes"] == [] and server["node"] is None
        _assert_node_clean(cloud)
        assert cloud.call("GET", "/v1/ports") == [] and cloud.call("GET", "/v1/volumes") == []
        assert cloud.volume_backend.exports == {}
        with cloud.context.sessions() as session:
            node = session.scalars(select(Node).where(Node.hostname == NODE)).one()
            assert (node.instance_count, node.claimed_cpu, node.claimed_mem) == (0, 0, 0), (driver, operation)
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
    _clear(cloud)
    assert cloud.act("POST", f"/v1/instances/v1/{action}", body)["status"] == "succeeded"
    calls = _mutating_calls(cloud)
    assert ("hypervisor", "attach", 0) in calls, calls
    added = cloud.call("GET", "/v1/instances/v1")["ports"][-1] if action == "nics" else "data1"
    assert cloud.act("DELETE", f"/v1/instances/v1/{action}/{added}")["status"] == "succeeded"

    for driver, operation, nth in calls:
        _clear(cloud)
        getattr(drivers, driver).faults.arm(operation, skip=nth)
        op = cloud.act("POST", f"/v1/instances/v1/{action}", body)
        assert op["status"] == "failed" and "injected fault" in op["error"], (driver, operation)
        assert held() == before, (driver, operation)
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
    _assert_node_clean(cloud)
    assert cloud.call("GET", "/v1/ports") == [] and cloud.call("GET", "/v1/volumes") == []
