"""NUMA cells as a resource request: a VM's vCPUs and memory fitted into its node's host cells.

The request is the flavor's (`numa_fit.numa_request`, from the extra specs the
instance kept at create time). A node fits when `numa_fit.fit` places it in
the node's reported cells beside the placements its instances hold, and, under
the flavor's `hw:pci_numa_affinity_policy`, near the host cells of the PCI
devices the instance gets there: those its PCI request would choose among the
node's free devices (the same choice its claim makes), then, in the claim, those
it was just given (PCI devices are claimed first, `KINDS`). The claim stores the
placement on the instance in the scheduling transaction, after the node's CPU
and RAM.

Why two claims never pin one CPU: the scheduler's conditional UPDATE of the
node row comes first, so a concurrent claim on the same node waits for this
transaction (PostgreSQL's row lock; SQLite runs one write transaction at a
time), and the claim then reads the placements afresh and fits again: it sees
every placement committed before it. If the fit no longer succeeds, the claim
raises ClaimRace and the scheduling is tried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import null, select, update
from sqlalchemy.orm import Session

from dpustack.contract.numa import NumaCell, NumaPlacement
from dpustack.controller.numa_fit import DoesNotFit, NumaRequest, fit, numa_request
from dpustack.controller.resource_requests.base import ClaimRace, ResourceRequest
from dpustack.controller.resource_requests.pci import PciDevices, free_devices_by_node
from dpustack.controller.services.numa import cells_of, parse_cells, placements_by_node
from dpustack.controller.services.pci import allocated_to
from dpustack.db.models import Instance, Node
from dpustack.pci.device import PciDevice


@dataclass(frozen=True)
class NumaFacts:
    """What NumaCells reads of the candidate nodes: the placements held on each, and its free PCI devices
    (read only for an instance with PCI requests)."""

    placements: dict[str, list[NumaPlacement]]
    free_devices: dict[str, list[PciDevice]] = field(default_factory=dict)


@dataclass(frozen=True)
class NumaCells(ResourceRequest):
    """A VM's NUMA request; `instance_id`'s own placement is never counted against it. `pci`: the instance's
    PCI request, whose devices' cells the placement must respect."""

    rejection: ClassVar[str] = "not enough room in the NUMA cells"

    request: NumaRequest
    instance_id: str = ""
    pci: PciDevices | None = None

    @classmethod
    def of_instance(cls, session: Session, instance_id: str, params: dict[str, Any]) -> NumaCells | None:
        """The NUMA request of a VM (its create parameters carry `numa_specs`); None for bare metal."""
        specs = params.get("numa_specs")
        if specs is None:
            return None
        instance = session.get_one(Instance, instance_id)
        return cls(numa_request(instance.vcpus, instance.ram, specs), instance_id,
                   PciDevices.of_instance(session, instance_id, params))

    def read_facts(self, session: Session, node_ids: list[str]) -> NumaFacts:
        """The placements held on each node and, with PCI requests, each node's free devices."""
        free = free_devices_by_node(session, node_ids) if self.pci is not None else {}
        return NumaFacts(placements_by_node(session, node_ids, leave_out=self.instance_id), free)

    def fits(self, node: Node, facts: NumaFacts) -> bool:
        return self.why_not(node, facts) is None

    def why_not(self, node: Node, facts: NumaFacts) -> str | None:
        """DoesNotFit's reason for this node, or None if the request fits it."""
        cells = self._device_cells(facts.free_devices.get(node.id, []))
        try:
            self._place(cells_of(node), facts.placements.get(node.id, []), cells)
        except DoesNotFit as exc:
            return exc.message
        return None

    def claim(self, session: Session, node: Node, instance_id: str) -> None:
        cells = parse_cells(session.execute(select(Node.numa_cells).where(Node.id == node.id)).scalar_one())
        held = placements_by_node(session, [node.id], leave_out=instance_id).get(node.id, [])
        device_cells = {row.numa_node for row in allocated_to(session, instance_id, node_id=node.id)
                        if row.numa_node is not None and row.numa_node >= 0}
        try:
            placement = self._place(cells, held, device_cells)
        except DoesNotFit as exc:
            raise ClaimRace(f"the NUMA cells of {node.hostname} were claimed concurrently: {exc.message}") from exc
        _store(session, instance_id, placement.model_dump(mode="json"))

    @classmethod
    def release(cls, session: Session, instance_id: str) -> None:
        """The instance holds no placement any more."""
        _store(session, instance_id, null())

    def _device_cells(self, free: list[PciDevice]) -> set[int]:
        """The host cells of the devices the PCI request would take among `free` (none: no request, or no
        choice, which the PCI request turns down itself)."""
        if self.pci is None:
            return set()
        chosen = {address for addresses in self.pci.choose(free) or [] for address in addresses}
        return {d.numa_node for d in free if d.address in chosen and d.numa_node is not None and d.numa_node >= 0}

    def _place(self, cells: list[NumaCell], held: list[NumaPlacement], device_cells: set[int]) -> NumaPlacement:
        if not cells:
            raise DoesNotFit("the node reports no NUMA cells")
        return fit(self.request, cells, held, device_cells)


def _store(session: Session, instance_id: str, placement: Any) -> None:
    """Write the instance's placement (SQL NULL: none) and let a loaded instance read it back."""
    session.execute(update(Instance).where(Instance.id == instance_id).values(numa_placement=placement)
                    .execution_options(synchronize_session=False))
    loaded = session.get(Instance, instance_id)
    if loaded is not None:
        session.expire(loaded, ["numa_placement"])
