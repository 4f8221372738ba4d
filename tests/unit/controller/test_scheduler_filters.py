"""Which nodes the scheduler considers, and in which order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from dpustack.controller.resource_requests import ResourceRequest
from dpustack.controller.scheduler import Demand, Facts, pick_candidates
from dpustack.db.models import Node, utcnow


def node(name, *, node_type="bm", cpu=64, mem=262144, claimed_cpu=0, claimed_mem=0, count=0, ready=True,
         age=0.0):
    return Node(hostname=name, node_type=node_type, total_cpu=cpu, total_mem=mem, claimed_cpu=claimed_cpu,
                claimed_mem=claimed_mem, instance_count=count, ready=ready,
                last_seen=utcnow() - timedelta(seconds=age), joined_at=utcnow() - timedelta(hours=1))


BM = Demand(node_type="bm", vcpus=8, ram=16384)


def test_only_up_ready_nodes_of_the_right_type_with_room_pass_and_reasons_are_counted():
    nodes = [node("ok"), node("vm", node_type="vm"), node("stale", age=120), node("booting", ready=False),
             node("busy", count=1), node("small", cpu=4)]
    passed, rejected = pick_candidates(nodes, BM, Facts(down_after=30))
    assert [n.hostname for n in passed] == ["ok"]
    assert rejected == {"wrong node type": 1, "down or not ready": 2,
                        "not enough free CPU, RAM or already in use": 2}


def test_vm_nodes_share_and_the_emptiest_node_comes_first():
    vm = Demand(node_type="vm", vcpus=2, ram=2048)
    nodes = [node("a", node_type="vm", claimed_mem=100000, count=3), node("b", node_type="vm", count=1)]
    passed, _ = pick_candidates(nodes, vm, Facts(down_after=30))
    assert [n.hostname for n in passed] == ["b", "a"]


@dataclass(frozen=True)
class FreeCell(ResourceRequest):
    """A kind of resource other than PCI: a node fits if its facts name it."""

    rejection: ClassVar[str] = "no free NUMA cell"

    @classmethod
    def of_instance(cls, session, instance_id, params):
        return cls()

    def read_facts(self, session, node_ids):
        raise AssertionError("pick_candidates is handed the facts")

    def fits(self, node, facts):
        return node.hostname in facts

    def claim(self, session, node, instance_id):
        raise AssertionError("pick_candidates claims nothing")

    @classmethod
    def release(cls, session, instance_id):
        raise AssertionError("pick_candidates releases nothing")


def test_a_resource_request_of_another_kind_filters_with_its_own_reason_after_the_node_filters():
    demand = Demand(node_type="bm", vcpus=8, ram=16384, resources=(FreeCell(),))
    nodes = [node("with-cell"), node("without-cell"), node("busy-with-cell", count=1)]
    facts = Facts(down_after=30, resources=[{"with-cell", "busy-with-cell"}])  # what FreeCell read
    passed, rejected = pick_candidates(nodes, demand, facts)
    assert [n.hostname for n in passed] == ["with-cell"]
    assert rejected == {"no free NUMA cell": 1, "not enough free CPU, RAM or already in use": 1}


def test_the_closest_miss_is_the_roomiest_node_only_a_resource_request_turned_down_in_its_words():
    from dpustack.controller.numa_fit import numa_request
    from dpustack.controller.resource_requests import NumaCells
    from dpustack.controller.resource_requests.numa import NumaFacts
    from dpustack.controller.scheduler import closest_miss

    cells = [{"id": 0, "cpus": [0, 1], "memory_mib": 4096}]
    request = NumaCells(numa_request(4, 1024, {"hw:cpu_policy": "dedicated"}))
    demand = Demand(node_type="vm", vcpus=4, ram=1024, resources=(request,))
    nodes = [node("small", node_type="vm", mem=65536, claimed_mem=60000), node("roomy", node_type="vm"),
             node("stale", node_type="vm", age=120), node("bm")]
    for vm in nodes:
        vm.id, vm.numa_cells = vm.hostname, cells
    facts = Facts(down_after=30, resources=[NumaFacts({})])

    passed, rejected = pick_candidates(nodes, demand, facts)

    assert passed == [] and rejected["not enough room in the NUMA cells"] == 2
    assert closest_miss(nodes, demand, facts) == (
        "on roomy, the closest: needs 4 dedicated CPUs and 1024 MiB in one cell; cell 0 has 2 CPUs and 4096 "
        "MiB free")
    assert closest_miss(nodes, Demand(node_type="vm", vcpus=1, ram=1), Facts(down_after=30)) is None
