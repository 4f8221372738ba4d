"""The scheduler: filter nodes, weigh the survivors, claim one atomically.

Filters: node type, node up (fresh report) and ready, free CPU and RAM, for
bare metal a node with no instance (the instance is the whole host), the
traits the instance needs (e.g. COMPUTE_REMOTE_MANAGED_PORTS), and then
each of its resource requests (`resource_requests`: free PCI devices that
meet all of its PCI requests together; for a VM, NUMA cells that hold its
vCPUs and memory), each with its own rejection reason. When nothing fits, the
answer also says why the closest node was turned down (a NUMA fit's reason).
The claim is made of conditional UPDATEs in one transaction, so two
concurrent creates (in one controller or in several sharing PostgreSQL)
never both get the last slot or the last device.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dpustack.controller import resource_requests
from dpustack.controller.resource_requests import ResourceRequest
from dpustack.controller.services.nodes import is_up
from dpustack.db.models import Node
from dpustack.errors import Conflict


@dataclass(frozen=True)
class Demand:
    """What an instance needs from a node."""

    node_type: str
    vcpus: int
    ram: int
    traits: frozenset[str] = frozenset()
    resources: tuple[ResourceRequest, ...] = ()

    @property
    def exclusive(self) -> bool:
        return self.node_type == "bm"


class NoValidNode(Conflict):
    """No node passes the filters, or every candidate was claimed first."""


@dataclass
class Facts:
    """What filters may look at besides the node row."""

    down_after: float
    # What each of the demand's resource requests read about the nodes (`read_facts`), in the demand's order.
    resources: list[Any] = field(default_factory=list)


Filter = Callable[[Node, Demand, Facts], bool]


def _type_matches(node: Node, demand: Demand, _: Facts) -> bool:
    return node.node_type == demand.node_type


def _in_service(node: Node, _: Demand, __: Facts) -> bool:
    return not node.maintenance


def _alive(node: Node, _: Demand, facts: Facts) -> bool:
    return node.ready and is_up(node, facts.down_after)


def _has_traits(node: Node, demand: Demand, _: Facts) -> bool:
    return demand.traits <= set(node.traits or [])


def _has_room(node: Node, demand: Demand, _: Facts) -> bool:
    if demand.exclusive and node.instance_count > 0:
        return False
    return (node.total_cpu - node.claimed_cpu >= demand.vcpus
            and node.total_mem - node.claimed_mem >= demand.ram)


FILTERS: list[tuple[str, Filter]] = [
    ("wrong node type", _type_matches),
    ("in maintenance", _in_service),
    ("down or not ready", _alive),
    ("not enough free CPU, RAM or already in use", _has_room),
    ("missing a required trait", _has_traits),
]


def _weight(node: Node) -> tuple[int, int]:
    """Spread load: most free memory first, then most free CPU."""
    return (node.total_mem - node.claimed_mem, node.total_cpu - node.claimed_cpu)


def _rejection(node: Node, demand: Demand, facts: Facts) -> str | None:
    """Why `node` cannot take the demand: the first filter, then the first resource request, it fails."""
    reason = next((name for name, keep in FILTERS if not keep(node, demand, facts)), None)
    if reason is None:
        reason = next((request.rejection for request, found in zip(demand.resources, facts.resources, strict=True)
                       if not request.fits(node, found)), None)
    return reason


def closest_miss(nodes: list[Node], demand: Demand, facts: Facts) -> str | None:
    """Why the best node (by weight) that only a resource request turned down was turned down, in that
    request's words (`ResourceRequest.why_not`), with its hostname; None if no request says more."""
    missed = []
    for node in nodes:
        if any(not keep(node, demand, facts) for _, keep in FILTERS):
            continue
        for request, found in zip(demand.resources, facts.resources, strict=True):
            if not request.fits(node, found):
                detail = request.why_not(node, found)
                if detail:
                    missed.append((node, detail))
                break
    if not missed:
        return None
    node, detail = max(missed, key=lambda pair: _weight(pair[0]))
    return f"on {node.hostname}, the closest: {detail}"


def pick_candidates(nodes: list[Node], demand: Demand, facts: Facts) -> tuple[list[Node], Counter[str]]:
    """Nodes passing every filter and resource request (best first) and, per reason, how many were rejected."""
    rejected: Counter[str] = Counter()
    passed = []
    for node in nodes:
        reason = _rejection(node, demand, facts)
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


def claim_more(session: Session, node_id: str, vcpus: int, ram: int) -> bool:
    """Take more CPU and RAM on one node for an instance it runs (a resize) if they are still free; True on
    success."""
    result = session.execute(
        update(Node).where(Node.id == node_id, Node.total_cpu - Node.claimed_cpu >= vcpus,
                           Node.total_mem - Node.claimed_mem >= ram)
        .values(claimed_cpu=Node.claimed_cpu + vcpus, claimed_mem=Node.claimed_mem + ram)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def release_some(session: Session, node_id: str, vcpus: int, ram: int) -> None:
    """Give back CPU and RAM that `claim_more` took (the instance stays on the node)."""
    session.execute(update(Node).where(Node.id == node_id)
                    .values(claimed_cpu=Node.claimed_cpu - vcpus, claimed_mem=Node.claimed_mem - ram)
                    .execution_options(synchronize_session=False))


def release(session: Session, node_id: str, demand: Demand, *, instance_id: str | None = None) -> None:
    """Give back what `claim` took (and every resource the instance holds, when given)."""
    if instance_id is not None:
        resource_requests.release_all(session, instance_id)
    session.execute(update(Node).where(Node.id == node_id)
                    .values(claimed_cpu=Node.claimed_cpu - demand.vcpus,
                            claimed_mem=Node.claimed_mem - demand.ram,
                            instance_count=Node.instance_count - 1)
                    .execution_options(synchronize_session=False))


def schedule(session: Session, demand: Demand, down_after: float, *, instance_id: str,
             pinned: str | None = None, avoid: str | None = None) -> Node:
    """Choose a node (`pinned`, if given; never `avoid`: the node a migration leaves) and claim its CPU, RAM
    and the demand's resource requests in the session's transaction.

    Raises resource_requests.ClaimRace when a concurrent claim took a chosen
    resource: the transaction must then be rolled back and scheduling tried again.
    """
    query = select(Node).order_by(Node.hostname)
    if pinned:
        query = query.where(Node.id == pinned)
    if avoid:
        query = query.where(Node.id != avoid)
    nodes = list(session.scalars(query))
    node_ids = [n.id for n in nodes]
    facts = Facts(down_after, [request.read_facts(session, node_ids) for request in demand.resources])
    candidates, rejected = pick_candidates(nodes, demand, facts)
    for node in candidates:
        if claim(session, node.id, demand):
            for request in demand.resources:
                request.claim(session, node, instance_id)
            return node
    if candidates:
        rejected["claimed by a concurrent request"] += len(candidates)
    why = ", ".join(f"{count} {reason}" for reason, count in rejected.items()) or "no nodes joined"
    what = f"{demand.node_type} node with {demand.vcpus} CPU / {demand.ram} MiB"
    miss = closest_miss(nodes, demand, facts)
    raise NoValidNode(f"no valid node for a {what}: {why}" + (f"; {miss}" if miss else ""))
