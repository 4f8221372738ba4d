"""NUMA on VM nodes: the cells each node reports, the placements its instances hold, and what is left free.

A node's cells are what its agent last reported (`Node.numa_cells`); an
instance's placement (`Instance.numa_placement`) is claimed by the scheduler
with its CPU and RAM (`resource_requests.numa`) and released with them (a resize holds the old flavor's
placement beside the new one's until it is confirmed or reverted: `services.resize`). The
free figures are `numa_fit`'s: the cells minus what the host's other domains
use minus every placement held on the node.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.contract.numa import NumaCell, NumaPlacement
from dpustack.controller.numa_fit import CellFree, InvalidExtraSpec, NumaRequest, free_in_cells, is_numa_spec
from dpustack.controller.numa_fit import numa_request
from dpustack.db.models import Flavor, Instance, Node


def parse_cells(stored: list[Any] | None) -> list[NumaCell]:
    """Host cells as `Node.numa_cells` holds them."""
    return [NumaCell.model_validate(cell) for cell in stored or []]


def cells_of(node: Node) -> list[NumaCell]:
    """The host cells the node reported last (none for a bare-metal node)."""
    return parse_cells(node.numa_cells)


def placements_by_node(session: Session, node_ids: list[str], *,
                       leave_out: str | None = None) -> dict[str, list[NumaPlacement]]:
    """The placements the live instances of each node hold (but `leave_out`'s), read afresh from the
    database (columns, not cached objects: a claim reads what concurrent claims committed). An instance
    whose resize waits for its confirm holds two: its new flavor's and its old one's; one whose migration
    does holds its old one on the node it left."""
    found: dict[str, list[NumaPlacement]] = defaultdict(list)
    if not node_ids:
        return found
    rows = session.execute(select(Instance.node_id, Instance.numa_placement, Instance.resize_from)
                           .where(Instance.node_id.in_(node_ids) | Instance.resize_from.is_not(None),
                                  Instance.deleted.is_(False),
                                  Instance.numa_placement.is_not(None) | Instance.resize_from.is_not(None),
                                  Instance.id != (leave_out or ""))
                           .order_by(Instance.created_at, Instance.id))
    wanted = set(node_ids)
    for node_id, placement, resize_from in rows:
        old = resize_from or {}
        # a migration's old placement is on the node it left, a resize's on the instance's own node
        for where, held in ((node_id, placement), (old.get("node_id") or node_id, old.get("numa_placement"))):
            if held and where in wanted:  # a JSON null, on a backend that keeps one
                found[where].append(NumaPlacement.model_validate(held))
    return found


def free_of(node: Node, placements: list[NumaPlacement]) -> list[CellFree]:
    """The node's cells' free figures beside the placements its instances hold."""
    return free_in_cells(cells_of(node), placements)


def numa_specs(extra_specs: Mapping[str, Any]) -> dict[str, str]:
    """The extra specs the NUMA fit reads, as an instance keeps them from its flavor."""
    return {key: str(value) for key, value in extra_specs.items() if is_numa_spec(key)}


def check_specs(flavor: Flavor, extra_specs: Mapping[str, Any], *, field_prefix: str = "") -> NumaRequest:
    """The flavor's NUMA request with these extra specs; InvalidExtraSpec (400) naming the key
    (after `field_prefix`) for a value the NUMA vocabulary does not take."""
    try:
        return numa_request(flavor.vcpus, flavor.ram, numa_specs(extra_specs))
    except InvalidExtraSpec as exc:
        raise InvalidExtraSpec(f"flavor '{flavor.name}': {exc.message}",
                               field=f"{field_prefix}{exc.field}" if exc.field else None) from exc


def placement_of(instance: Instance) -> NumaPlacement | None:
    """Where the instance runs on its node's host, if it holds a placement."""
    return NumaPlacement.model_validate(instance.numa_placement) if instance.numa_placement else None
