"""Helpers of the migration tests: a cloud with nodes of both types, an instance and what it holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dpustack.db.models import Node

CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}, {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192}]
VM1, VM2, BM1, BM2 = "dpu-vm-1", "dpu-vm-2", "dpu-bm-1", "dpu-bm-2"


def server(cloud, name: str) -> dict[str, Any]:
    return cloud.call("GET", f"/v1/instances/{name}")


def nics(cloud, name: str) -> list[tuple[str, str, str]]:
    return [(n["port_id"], n["mac_address"], n["ip_address"]) for n in server(cloud, name)["nics"]]


def claims(cloud, hostname: str) -> tuple[int, int, int]:
    with cloud.context.sessions() as session:
        node = session.scalars(select(Node).where(Node.hostname == hostname)).one()
        return node.claimed_cpu, node.claimed_mem, node.instance_count


def build_with_data(cloud, name: str, flavor: str, node: str) -> dict[str, Any]:
    assert cloud.build(name, flavor=flavor, node=node)["status"] == "succeeded"
    assert cloud.act("POST", f"/v1/instances/{name}/volumes", {"volume": "data1"})["status"] == "succeeded"
    return server(cloud, name)


def mix(cloud, vm_host: dict[str, Any] | None = None):
    """Give the cloud (two bare-metal nodes) two vm nodes (their hosts' other options `vm_host`), flavors of both
    types (vm.big's disk holds bm.small's boot volume), an image, a network and a data volume."""
    cloud.setup_basics()
    cloud.add_node(VM1, vm_cells=CELLS, vm_host=vm_host)
    cloud.add_node(VM2, vm_cells=CELLS, vm_host=vm_host)
    for name, vcpus, ram, disk in (("vm.small", 2, 1024, 1), ("vm.big", 2, 2048, 40)):
        cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "type": "vm"},
                   expect=201)
    cloud.volume("data1", size=1)
    return cloud
