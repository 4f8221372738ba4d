"""Cold migration through the real controller API, with real agents of both node types (memory drivers): a VM
to another vm node, a bare-metal instance to a VM and a VM to bare metal. Each ends on the target with the same
ports (ids, MACs, addresses) and volumes, nothing left on the source, the source's claims held until the
confirm; a revert brings it back; what cannot move is a 409 saying why."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from dpustack.db.models import Node
from dpustack.drivers.hypervisor import DomainState

CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}, {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192}]
VM1, VM2, BM1, BM2 = "dpu-vm-1", "dpu-vm-2", "dpu-bm-1", "dpu-bm-2"


@pytest.fixture
def cloud2(cloud):
    """Two bare-metal and two vm nodes, flavors of both types (vm.big's disk holds bm.small's boot volume),
    an image, a network and a data volume."""
    cloud.setup_basics()
    cloud.add_node(VM1, vm_cells=CELLS)
    cloud.add_node(VM2, vm_cells=CELLS)
    for name, vcpus, ram, disk in (("vm.small", 2, 1024, 1), ("vm.big", 2, 2048, 40)):
        cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "type": "vm"},
                   expect=201)
    cloud.volume("data1", size=1)
    return cloud


def server(cloud, name: str) -> dict[str, Any]:
    return cloud.call("GET", f"/v1/instances/{name}")


def nics(cloud, name: str) -> list[tuple[str, str, str]]:
    return [(n["port_id"], n["mac_address"], n["ip_address"]) for n in server(cloud, name)["nics"]]


def held_on(cloud, hostname: str) -> dict[str, Any]:
    """What a node's drivers hold: functions, switch ports, storage attachments, domains (vm nodes)."""
    drivers = cloud.drivers(hostname)
    held = {"functions": drivers.functions.list(), "switch": drivers.switch.list_ports(),
            "storage": drivers.storage.list(), "instances": cloud.router.agents[hostname].get("/v1/instances").json()}
    if hostname.startswith("dpu-vm"):
        held["domains"] = drivers.hypervisor.domains()
    return held


def assert_clean(cloud, hostname: str) -> None:
    assert all(not value for value in held_on(cloud, hostname).values()), held_on(cloud, hostname)


def claims(cloud, hostname: str) -> tuple[int, int, int]:
    with cloud.context.sessions() as session:
        node = session.scalars(select(Node).where(Node.hostname == hostname)).one()
        return node.claimed_cpu, node.claimed_mem, node.instance_count


def build_with_data(cloud, name: str, flavor: str, node: str) -> dict[str, Any]:
    assert cloud.build(name, flavor=flavor, node=node)["status"] == "succeeded"
    assert cloud.act("POST", f"/v1/instances/{name}/volumes", {"volume": "data1"})["status"] == "succeeded"
    return server(cloud, name)


def migrate(cloud, name: str, **body: Any) -> dict[str, Any]:
    return cloud.act("POST", f"/v1/instances/{name}/migrate", body)


def test_a_vm_moves_to_another_vm_node_with_its_ports_and_volumes(cloud2):
    cloud = cloud2
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")

    op = migrate(cloud, "v1", node=VM2)

    assert op["status"] == "succeeded", op
    assert [s["name"] for s in op["steps"]] == ["claim_target", "stop_on_source", "build_on_target",
                                                "bind_ports_on_target", "clean_up_source", "finish_migrate"]
    after = server(cloud, "v1")
    assert (after["status"], after["node"], after["source_node"]) == ("VERIFY_MIGRATE", VM2, VM1)
    assert nics(cloud, "v1") == ports and after["volumes"] == before["volumes"]
    assert cloud.drivers(VM2).hypervisor.state(after["id"]) == DomainState.RUNNING
    assert_clean(cloud, VM1)
    finish = op["steps"][-1]["detail"]
    assert finish["duration_ms"] >= finish["downtime_ms"] >= 0
    assert claims(cloud, VM1) == (2, 1024, 1) and claims(cloud, VM2) == (2, 1024, 1)

    confirmed = cloud.call("POST", "/v1/instances/v1/migrate-confirm")
    assert (confirmed["status"], confirmed["source_node"], confirmed["old_flavor"]) == ("ACTIVE", None, None)
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (2, 1024, 1)
