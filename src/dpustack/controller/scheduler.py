"""Scheduler v1: filter nodes, weigh the survivors, claim one atomically.

Filters: node type, node up (fresh report) and ready, free CPU and RAM, and
for bare metal a node with no instance (the instance is the whole host).
The claim is a single conditional UPDATE, so two concurrent creates (in one
controller or in several sharing PostgreSQL) never both get the last slot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dpustack.controller.services.nodes import is_up
from dpustack.db.models import Node
from dpustack.errors import Conflict


@dataclass(frozen=True)
class Demand:
    """What an instance needs from a node."""

    node_type: str
    vcpus: int
    ram: int

    @property
    def exclusive(self) -> bool:
        return self.node_type == "bm"


class NoValidNode(Conflict):
    """No node passes the filters, or every candidate was claimed first."""


Filter = Callable[[Node, Demand, float], bool]


def _type_matches(node: Node, demand: Demand, _: float) -> bool:
    return node.node_type == demand.node_type


def _alive(node: Node, _: Demand, down_after: float) -> bool:
    return node.ready and is_up(node, down_after)


def _has_room(node: Node, demand: Demand, _: float) -> bool:
    if demand.exclusive and node.instance_count > 0:
        return False
    return (node.total_cpu - node.claimed_cpu >= demand.vcpus
            and node.total_mem - node.claimed_mem >= demand.ram)


FILTERS: list[tuple[str, Filter]] = [
    ("wrong node type", _type_matches),
    ("down or not ready", _alive),
    ("not enough free CPU, RAM or already in use", _has_room),
]


def _weight(node: Node) -> tuple[int, int]:
    """Spread load: most free memory first, then most free CPU."""
    return (node.total_mem - node.claimed_mem, node.total_cpu - node.claimed_cpu)


def pick_candidates(nodes: list[Node], demand: Demand, down_after: float) -> tuple[list[Node], Counter[str]]:
    """Nodes passing every filter (best first) and, per filter, how many it rejected."""
    rejected: Counter[str] = Counter()
    passed = []
    for node in nodes:
        reason = next((name for name, keep in FILTERS if not keep(node, demand, down_after)), None)
        if reason is None:
            passed.append(node)
        else:
            rejected[reason] += 1
    return sorted(passed, key=_weight, reverse=True), rejected


def claim(session: Session, node_id: str, demand: Demand) -> bool:
    """Take the resources on one node if they are still free; True on success."""
    conditions = [Node.id == node_id,
                  Node.total_cpu - Node.claimed_cpu >= demand.vcpus,
                  Node.total_mem - Node.claimed_mem >= demand.ram]
    if demand.exclusive:
        conditions.append(Node.instance_count == 0)
    result = session.execute(
        update(Node).where(*conditions).values(claimed_cpu=Node.claimed_cpu + demand.vcpus,
                                               claimed_mem=Node.claimed_mem + demand.ram,
                                               instance_count=Node.instance_count + 1)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def release(session: Session, node_id: str, demand: Demand) -> None:
    session.execute(update(Node).where(Node.id == node_id)
                    .values(claimed_cpu=Node.claimed_cpu - demand.vcpus,
                            claimed_mem=Node.claimed_mem - demand.ram,
                            instance_count=Node.instance_count - 1)
                    .execution_options(synchronize_session=False))


def schedule(session: Session, demand: Demand, down_after: float, *, pinned: str | None = None) -> Node:
    """Choose a node and claim it in the session's transaction."""
    query = select(Node).order_by(Node.hostname)
    if pinned:
        query = query.where(Node.id == pinned)
    nodes = list(session.scalars(query))
    candidates, rejected = pick_candidates(nodes, demand, down_after)
    for node in candidates:
        if claim(session, node.id, demand):
            return node
    if candidates:
        rejected["claimed by a concurrent request"] += len(candidates)
    why = ", ".join(f"{count} {reason}" for reason, count in rejected.items()) or "no nodes joined"
    what = f"{demand.node_type} node with {demand.vcpus} CPU / {demand.ram} MiB"
    raise NoValidNode(f"no valid node for a {what}: {why}")
