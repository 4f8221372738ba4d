"""Which nodes the scheduler considers, and in which order."""

from __future__ import annotations

from datetime import timedelta

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
