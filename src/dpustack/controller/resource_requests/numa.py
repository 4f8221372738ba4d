"""NUMA cells as a resource request: a VM's vCPUs and memory fitted into its node's host cells.

The request is the flavor's (`numa_fit.numa_request`, from the extra specs the
instance kept at create time). A node fits when `numa_fit.fit` places it in
the node's reported cells beside the placements its instances hold; the claim
stores the placement on the instance in the scheduling transaction, after the
node's CPU and RAM.

Why two claims never pin one CPU: the scheduler's conditional UPDATE of the
node row comes first, so a concurrent claim on the same node waits for this
transaction (PostgreSQL's row lock; SQLite runs one write transaction at a
time), and the claim then reads the placements afresh and fits again: it sees
every placement committed before it. If the fit no longer succeeds, the claim
raises ClaimRace and the scheduling is tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import null, select, update
from sqlalchemy.orm import Session

from dpustack.contract.numa import NumaCell, NumaPlacement
from dpustack.controller.numa_fit import DoesNotFit, NumaRequest, fit, numa_request
from dpustack.controller.resource_requests.base import ClaimRace, ResourceRequest
from dpustack.controller.services.numa import cells_of, parse_cells, placements_by_node
from dpustack.db.models import Instance, Node


@dataclass(frozen=True)
class NumaCells(ResourceRequest):
    """A VM's NUMA request; `instance_id`'s own placement is never counted against it."""

    rejection: ClassVar[str] = "not enough room in the NUMA cells"

    request: NumaRequest
    instance_id: str = ""

    @classmethod
    def of_instance(cls, session: Session, instance_id: str, params: dict[str, Any]) -> NumaCells | None:
        """The NUMA request of a VM (its create parameters carry `numa_specs`); None for bare metal."""
        specs = params.get("numa_specs")
        if specs is None:
            return None
        instance = session.get_one(Instance, instance_id)
        return cls(numa_request(instance.vcpus, instance.ram, specs), instance_id)

    def read_facts(self, session: Session, node_ids: list[str]) -> dict[str, list[NumaPlacement]]:
        """The placements held on each node."""
        return placements_by_node(session, node_ids, leave_out=self.instance_id)

    def fits(self, node: Node, facts: dict[str, list[NumaPlacement]]) -> bool:
        return self.why_not(node, facts) is None

    def why_not(self, node: Node, facts: dict[str, list[NumaPlacement]]) -> str | None:
        """DoesNotFit's reason for this node, or None if the request fits it."""
        try:
            self._place(cells_of(node), facts.get(node.id, []))
        except DoesNotFit as exc:
            return exc.message
        return None

    def claim(self, session: Session, node: Node, instance_id: str) -> None:
        cells = parse_cells(session.execute(select(Node.numa_cells).where(Node.id == node.id)).scalar_one())
        held = placements_by_node(session, [node.id], leave_out=instance_id).get(node.id, [])
        try:
            placement = self._place(cells, held)
        except DoesNotFit as exc:
            raise ClaimRace(f"the NUMA cells of {node.hostname} were claimed concurrently: {exc.message}") from exc
        _store(session, instance_id, placement.model_dump(mode="json"))

    @classmethod
    def release(cls, session: Session, instance_id: str) -> None:
        """The instance holds no placement any more."""
        _store(session, instance_id, null())

    def _place(self, cells: list[NumaCell], held: list[NumaPlacement]) -> NumaPlacement:
        if not cells:
            raise DoesNotFit("the node reports no NUMA cells")
        return fit(self.request, cells, held)


def _store(session: Session, instance_id: str, placement: Any) -> None:
    """Write the instance's placement (SQL NULL: none) and let a loaded instance read it back."""
    session.execute(update(Instance).where(Instance.id == instance_id).values(numa_placement=placement)
                    .execution_options(synchronize_session=False))
    loaded = session.get(Instance, instance_id)
    if loaded is not None:
        session.expire(loaded, ["numa_placement"])
