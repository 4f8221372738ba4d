"""VM nodes' NUMA cells, through the real controller API and a real agent of a vm node (its host the memory
hypervisor driver): reported, shown with what is free, used by the scheduler (pinned CPUs never shared),
claimed and released with the CPU and RAM, and handed to the node, whose domains are pinned as placed."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver

NO_BM_NODES = pytest.mark.parametrize("cloud", [0], indirect=True)
FOUR_CPU_CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192},
                  {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192,
                   "hugepages": [{"size_kib": 2048, "total": 1024, "free": 1024}]}]


def _flavor(cloud, name: str, vcpus: int, ram: int, **specs: str) -> dict[str, Any]:
    cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": vcpus, "ram": ram, "disk": 1, "type": "vm"},
               expect=201)
    return cloud.call("PUT", f"/v1/flavors/{name}/extra-specs", specs) if specs else cloud.call(
        "GET", f"/v1/flavors/{name}")


def _build(cloud, name: str, flavor: str) -> dict[str, Any]:
    return cloud.act("POST", "/v1/instances", {"name": name, "flavor": flavor})


def _pinned(server: dict[str, Any]) -> list[int]:
    return [cpu for cell in server["numa_placement"]["cells"] for cpu in cell["host_cpus"]]


def _domain_pins(host: MemoryHypervisorDriver, uuid: str) -> list[int]:
    """The host CPUs the domain's definition pins its vCPUs to."""
    cputune = ET.fromstring(host.held[uuid].xml).find("cputune")
    return sorted(int(pin.get("cpuset")) for pin in (cputune.findall("vcpupin") if cputune is not None else []))


@pytest.fixture
def vm(cloud) -> MemoryHypervisorDriver:
    """A VM node of two cells of 4 CPUs and 8 GiB, the second with 1024 huge pages of 2 MiB; its host."""
    cloud.add_node("dpu-vm-1", vm_cells=FOUR_CPU_CELLS)
    return cloud.drivers("dpu-vm-1").hypervisor


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_vm_node_shows_its_two_cells_with_what_is_free_and_a_bm_node_none(cloud, vm):
    _flavor(cloud, "vm.pinned", 2, 1024, **{"hw:cpu_policy": "dedicated"})
    node = cloud.call("GET", "/v1/nodes/dpu-vm-1")
    assert (node["node_type"], node["total_cpu"], node["total_mem"]) == ("vm", 8, 16384)
    assert node["numa_cells"] == [
        {"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192, "used_memory_mib": 0, "pinned_cpus": [],
         "dedicated_cpus": None, "hugepages": [],
         "free": {"cpus": 4, "pinnable_cpus": [0, 1, 2, 3], "memory_mib": 8192, "hugepages": []}},
        {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192, "used_memory_mib": 0, "pinned_cpus": [],
         "dedicated_cpus": None, "hugepages": [{"size_kib": 2048, "total": 1024, "free": 1024}],
         "free": {"cpus": 4, "pinnable_cpus": [4, 5, 6, 7], "memory_mib": 8192 - 2048,  # the pool is not small
                  "hugepages": [{"size_kib": 2048, "free": 1024}]}}]

    assert _build(cloud, "v1", "vm.pinned")["status"] == "succeeded"
    cloud.report("dpu-vm-1")  # the agent leaves its own instance's domain out: the claim counts it
    by_host = {n["hostname"]: n for n in cloud.call("GET", "/v1/nodes")}
    assert by_host["dpu-bm-1"]["numa_cells"] == []
    free = [cell["free"] for cell in by_host["dpu-vm-1"]["numa_cells"]]
    assert free[0] == {"cpus": 2, "pinnable_cpus": [2, 3], "memory_mib": 7168, "hugepages": []}
    assert free[1]["cpus"] == 4 and by_host["dpu-vm-1"]["claimed_cpu"] == 2


@NO_BM_NODES
def test_what_the_hosts_other_domains_use_is_not_free(cloud):
    cloud.add_node("dpu-vm-1", vm_cells=FOUR_CPU_CELLS,
                   vm_host={"others": [{"uuid": "not-ours", "cell": 1, "memory_mib": 2048, "pinned_cpus": [4, 5]}]})
    _flavor(cloud, "vm.pinned", 2, 1024, **{"hw:cpu_policy": "dedicated", "hw:mem_page_size": "2MB"})

    (cell0, cell1) = cloud.call("GET", "/v1/nodes/dpu-vm-1")["numa_cells"]
    assert (cell1["used_memory_mib"], cell1["pinned_cpus"]) == (2048, [4, 5])
    assert cell1["free"] == {"cpus": 2, "pinnable_cpus": [6, 7], "memory_mib": 8192 - 2048 - 2048,
                             "hugepages": [{"size_kib": 2048, "free": 1024}]}
    assert _build(cloud, "v1", "vm.pinned")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/v1")
    assert server["numa_placement"] == {"pinned": True, "page_size_kib": 2048, "cells": [
        {"guest_cell": 0, "host_cell": 1, "vcpus": [0, 1], "host_cpus": [6, 7], "memory_mib": 1024}]}


@NO_BM_NODES
def test_dedicated_instances_get_pinned_cpus_that_never_overlap_and_the_node_is_told_them(cloud, vm):
    _flavor(cloud, "vm.pinned", 2, 1024, **{"hw:cpu_policy": "dedicated"})

    ops = [_build(cloud, f"v{i}", "vm.pinned") for i in range(4)]

    assert [op["status"] for op in ops] == ["succeeded"] * 4
    servers = [cloud.call("GET", f"/v1/instances/v{i}") for i in range(4)]
    pinned = [_pinned(server) for server in servers]
    assert sorted(cpu for cpus in pinned for cpu in cpus) == list(range(8))
    for server in servers:
        placement = server["numa_placement"]
        assert placement["pinned"] and len({cell["host_cell"] for cell in placement["cells"]}) == 1
        assert _domain_pins(vm, server["id"]) == sorted(_pinned(server))  # the node pinned its domain so
    assert ops[0]["steps"][0]["detail"]["numa_placement"] == servers[0]["numa_placement"]
    assert [cell["free"]["cpus"] for cell in cloud.call("GET", "/v1/nodes/dpu-vm-1")["numa_cells"]] == [0, 0]


@NO_BM_NODES
def test_a_flavor_that_fits_no_cell_fails_with_the_no_valid_node_fault_saying_why(cloud, vm):
    _flavor(cloud, "vm.wide", 6, 1024, **{"hw:cpu_policy": "dedicated"})

    op = _build(cloud, "wide", "vm.wide")

    reason = ("no valid node for a vm node with 6 CPU / 1024 MiB: 1 not enough room in the NUMA cells; on "
              "dpu-vm-1, the closest: needs 6 dedicated CPUs and 1024 MiB in one cell; cell 0 has 4 CPUs and "
              "8192 MiB free, cell 1 has 4 CPUs and 6144 MiB free")  # small pages: beside cell 1's 2 GiB pool
    assert op["status"] == "failed" and reason in op["error"]
    server = cloud.call("GET", "/v1/instances/wide")
    assert server["status"] == "ERROR" and reason in server["fault"]["message"]
    assert server["numa_placement"] is None and server["node"] is None
    assert cloud.call("GET", "/v1/nodes/dpu-vm-1")["claimed_cpu"] == 0 and vm.domains() == []


@NO_BM_NODES
def test_a_vm_node_that_reports_no_cells_takes_no_vm(cloud, vm):
    _flavor(cloud, "vm.small", 1, 512)
    assert cloud.report("dpu-vm-1", numa_cells=[])["numa_cells"] == []  # CPU and memory, but no cells to place them in

    op = _build(cloud, "v1", "vm.small")

    assert op["status"] == "failed" and "on dpu-vm-1, the closest: the node reports no NUMA cells" in op["error"]


@NO_BM_NODES
def test_deleting_an_instance_frees_its_cpus_for_the_next_one(cloud, vm):
    _flavor(cloud, "vm.pinned", 4, 1024, **{"hw:cpu_policy": "dedicated"})
    for name in ("a", "b"):
        assert _build(cloud, name, "vm.pinned")["status"] == "succeeded"
    assert _build(cloud, "c", "vm.pinned")["status"] == "failed"
    assert cloud.act("DELETE", "/v1/instances/c")["status"] == "succeeded"
    freed = _pinned(cloud.call("GET", "/v1/instances/a"))

    assert cloud.act("DELETE", "/v1/instances/a")["status"] == "succeeded"
    assert cloud.call("GET", "/v1/nodes/dpu-vm-1")["claimed_cpu"] == 4

    assert _build(cloud, "d", "vm.pinned")["status"] == "succeeded"
    assert _pinned(cloud.call("GET", "/v1/instances/d")) == freed
    assert set(freed).isdisjoint(_pinned(cloud.call("GET", "/v1/instances/b")))


@NO_BM_NODES
def test_concurrent_builds_never_get_the_same_cpu(cloud, vm):
    _flavor(cloud, "vm.pinned", 1, 256, **{"hw:cpu_policy": "dedicated"})
    results: list[dict[str, Any]] = []
    start = threading.Barrier(10)

    def create(name: str) -> None:
        start.wait()
        results.append(_build(cloud, name, "vm.pinned"))

    threads = [threading.Thread(target=create, args=(f"race{i}",)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(op["status"] for op in results) == ["failed"] * 2 + ["succeeded"] * 8
    servers = [s for s in cloud.call("GET", "/v1/instances") if s["status"] == "ACTIVE"]
    assert sorted(cpu for server in servers for cpu in _pinned(server)) == list(range(8))


@NO_BM_NODES
def test_shared_vcpus_take_room_and_numa_nodes_spread_an_instance_over_cells(cloud, vm):
    _flavor(cloud, "vm.shared", 3, 2048)
    _flavor(cloud, "vm.two", 2, 2048, **{"hw:numa_nodes": "2", "hw:cpu_policy": "dedicated"})

    assert _build(cloud, "t", "vm.two")["status"] == "succeeded"
    assert _build(cloud, "s", "vm.shared")["status"] == "succeeded"

    two = cloud.call("GET", "/v1/instances/t")["numa_placement"]
    assert [(c["host_cell"], c["memory_mib"], len(c["host_cpus"])) for c in two["cells"]] in (
        [(0, 1024, 1), (1, 1024, 1)], [(1, 1024, 1), (0, 1024, 1)])
    shared = cloud.call("GET", "/v1/instances/s")["numa_placement"]
    (part,) = shared["cells"]
    assert not shared["pinned"] and len(part["host_cpus"]) == 3  # floats over its cell's unpinned CPUs
    assert not set(part["host_cpus"]) & set(_pinned(cloud.call("GET", "/v1/instances/t")))
    free = [cell["free"]["cpus"] for cell in cloud.call("GET", "/v1/nodes/dpu-vm-1")["numa_cells"]]
    assert sorted(free) == [0, 3]  # 4 - 1 pinned - 3 shared, and 4 - 1 pinned
    # the shared instance floats over the rest of its cell: another two-cell dedicated one cannot pin there
    assert _build(cloud, "t2", "vm.two")["status"] == "failed"


@NO_BM_NODES
def test_with_dedicated_cpus_pinned_and_shared_instances_keep_to_their_own_cpus(cloud):
    cloud.add_node("dpu-vm-1", vm_cells=FOUR_CPU_CELLS, vm_host={"dedicated_cpus": "2-3,6-7"})
    host = cloud.drivers("dpu-vm-1").hypervisor
    _flavor(cloud, "vm.shared", 2, 1024)
    _flavor(cloud, "vm.pinned", 2, 1024, **{"hw:cpu_policy": "dedicated"})

    ops = [_build(cloud, name, flavor) for name, flavor in
           (("s1", "vm.shared"), ("p1", "vm.pinned"), ("s2", "vm.shared"), ("p2", "vm.pinned"))]

    assert [op["status"] for op in ops] == ["succeeded"] * 4
    cells = cloud.call("GET", "/v1/nodes/dpu-vm-1")["numa_cells"]
    assert [cell["dedicated_cpus"] for cell in cells] == [[2, 3], [6, 7]]
    placements = {name: cloud.call("GET", f"/v1/instances/{name}")["numa_placement"]["cells"][0]["host_cpus"]
                  for name in ("s1", "p1", "s2", "p2")}
    assert sorted(placements["p1"] + placements["p2"]) == [2, 3, 6, 7]
    assert sorted(placements["s1"] + placements["s2"]) == [0, 1, 4, 5]
    assert len(host.domains()) == 4 and _build(cloud, "s3", "vm.shared")["status"] == "failed"  # the shared CPUs are full


@NO_BM_NODES
@pytest.mark.parametrize("specs, key", [
    ({"hw:cpu_policy": "pinned"}, "hw:cpu_policy"),
    ({"hw:numa_nodes": "3"}, "hw:numa_nodes"),           # does not divide 4 vCPUs and 4096 MiB
    ({"hw:numa_nodes": "9"}, "hw:numa_nodes"),           # more cells than vCPUs
    ({"hw:mem_page_size": "3MB"}, "hw:mem_page_size"),
    ({"hw:numa_cpus.0": "0-3"}, "hw:numa_cpus.0"),       # without hw:numa_nodes
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "2048", "hw:numa_cpus.1": "2,3"},
     "hw:numa_mem.1"),
    ({"hw:pci_numa_affinity_policy": "strict"}, "hw:pci_numa_affinity_policy"),
])
def test_a_bad_numa_extra_spec_is_a_400_naming_the_key_and_changes_nothing(cloud, specs, key):
    _flavor(cloud, "vm.big", 4, 4096, **{"hw:mem_page_size": "small"})

    answer = cloud.api.put("/v1/flavors/vm.big/extra-specs", json=specs)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == key and key in answer.json()["error"]["message"]
    assert cloud.call("GET", "/v1/flavors/vm.big")["extra_specs"] == {"hw:mem_page_size": "small"}


@NO_BM_NODES
def test_every_pci_numa_affinity_policy_of_the_numa_fit_is_taken_by_flavors_and_servers_socket_too(cloud, vm):
    for policy in ("required", "preferred", "legacy", "socket"):
        flavor = _flavor(cloud, f"vm.{policy}", 1, 512, **{"hw:pci_numa_affinity_policy": policy})
        assert flavor["extra_specs"] == {"hw:pci_numa_affinity_policy": policy}
        assert _build(cloud, f"v-{policy}", f"vm.{policy}")["status"] == "succeeded"  # no PCI devices asked


@NO_BM_NODES
def test_specs_that_go_together_come_off_one_at_a_time_and_a_partial_set_stops_the_create(cloud, vm):
    specs = {"hw:numa_nodes": "2", "hw:numa_cpus.0": "0", "hw:numa_mem.0": "512", "hw:numa_cpus.1": "1",
             "hw:numa_mem.1": "512"}
    _flavor(cloud, "vm.two", 2, 1024, **specs)

    flavor = cloud.call("DELETE", "/v1/flavors/vm.two/extra-specs/hw:numa_nodes")

    assert "hw:numa_nodes" not in flavor["extra_specs"]
    answer = cloud.api.post("/v1/instances", json={"name": "v1", "flavor": "vm.two"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "flavor.hw:numa_cpus.0"
    answer = cloud.api.put("/v1/flavors/vm.two/extra-specs", json={"hw:cpu_policy": "dedicated"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "hw:numa_cpus.0"
    for key in ("hw:numa_cpus.0", "hw:numa_mem.0", "hw:numa_cpus.1", "hw:numa_mem.1"):
        cloud.call("DELETE", f"/v1/flavors/vm.two/extra-specs/{key}")
    assert _build(cloud, "v1", "vm.two")["status"] == "succeeded"


@NO_BM_NODES
def test_a_flavor_whose_stored_spec_is_bad_is_refused_at_create_naming_it(cloud, vm):
    from dpustack.db.models import Flavor, Instance

    _flavor(cloud, "vm.old", 2, 1024)
    with cloud.context.transaction() as session:  # as a flavor set before the specs were checked
        session.query(Flavor).filter(Flavor.name == "vm.old").one().extra_specs = {"hw:cpu_policy": "pinned"}

    answer = cloud.api.post("/v1/instances", json={"name": "v1", "flavor": "vm.old"})

    assert answer.status_code == 400 and answer.json()["error"]["field"] == "flavor.hw:cpu_policy"
    with cloud.context.sessions() as session:
        assert session.query(Instance).count() == 0


@NO_BM_NODES
@pytest.mark.parametrize("cells, reason", [
    ([FOUR_CPU_CELLS[0], {**FOUR_CPU_CELLS[1], "id": 0}], "cell id 0 is listed twice"),
    ([FOUR_CPU_CELLS[0], {**FOUR_CPU_CELLS[1], "cpus": [3, 4]}], "CPU 3 is in cells 0 and 1"),
    ([{**FOUR_CPU_CELLS[0], "pinned_cpus": [9]}], "cell 0: pinned CPUs [9] are not among its cpus"),
    ([FOUR_CPU_CELLS[0], {**FOUR_CPU_CELLS[1], "hugepages": [{"size_kib": 2048, "total": 1024, "free": 2000}]}],
     "cell 1: 2000 free 2048 KiB pages of only 1024"),
])
def test_a_report_with_cells_no_host_has_makes_the_node_not_ready_saying_why_and_takes_no_vm(cloud, vm, cells,
                                                                                            reason):
    _flavor(cloud, "vm.small", 1, 512)

    node = cloud.report("dpu-vm-1", numa_cells=cells)

    assert (node["ready"], node["numa_cells"]) == (False, [])
    assert node["not_ready_reason"] == f"its host's NUMA cells are not usable: {reason}"
    assert cloud.call("GET", "/v1/nodes")[0]["not_ready_reason"] == node["not_ready_reason"]
    op = _build(cloud, "v1", "vm.small")
    assert op["status"] == "failed" and "1 down or not ready" in op["error"]
    assert cloud.report("dpu-vm-1")["ready"] is True and cloud.call("GET", "/v1/nodes/dpu-vm-1")["not_ready_reason"] == ""
    assert _build(cloud, "v2", "vm.small")["status"] == "succeeded"


@NO_BM_NODES
def test_a_report_with_a_cell_field_out_of_its_range_is_a_400_naming_it_and_keeps_the_cells_before(cloud, vm):
    answer = cloud.api.post("/v1/nodes/report",
                            json={**cloud.report_body("dpu-vm-1"),
                                  "numa_cells": [{**FOUR_CPU_CELLS[0], "memory_mib": -1}]},
                            headers={"Authorization": f"Bearer {cloud.agent_token('dpu-vm-1')}"})

    assert answer.status_code == 400 and answer.json()["error"]["field"] == "numa_cells.0.memory_mib", answer.text
    assert [c["cpus"] for c in cloud.call("GET", "/v1/nodes/dpu-vm-1")["numa_cells"]] == [[0, 1, 2, 3],
                                                                                         [4, 5, 6, 7]]
