"""PCI devices as a resource request: every PCI request of an instance, met together on one node.

A claim marks the chosen device rows `allocated` with conditional UPDATEs,
so of two concurrent claims of one device only one succeeds; the loser gets
ClaimRace. Freeing a device a node no longer offers deletes its row.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dpustack.controller.resource_requests.base import ClaimRace, ResourceRequest
from dpustack.controller.services.pci import ALLOCATED, AVAILABLE, device_of, recompute_availability
from dpustack.db.models import Node, PciDeviceRow, PciRequest
from dpustack.pci.claims import Need, allocate
from dpustack.pci.device import PciDevice


@dataclass(frozen=True)
class PciDevices(ResourceRequest):
    """Devices for each (request id, need), chosen under the flavor's NUMA policy."""

    rejection: ClassVar[str] = "not enough free PCI devices for the requests"

    needs: tuple[tuple[str, Need], ...]
    policy: str = "legacy"
    labels: tuple[str, ...] = ()  # each need as the user asked for it, for `why_not`

    @classmethod
    def of_instance(cls, session: Session, instance_id: str, params: dict[str, Any]) -> PciDevices | None:
        """The instance's PCI requests in the order they were made; None without any."""
        requests = session.scalars(select(PciRequest).where(PciRequest.instance_id == instance_id)
                                   .order_by(PciRequest.created_at, PciRequest.id))
        rows = list(requests)
        needs = tuple((r.id, Need(r.count, tuple(r.specs))) for r in rows)
        labels = tuple(_label(r) for r in rows)
        return cls(needs, params.get("pci_policy", "legacy"), labels) if needs else None

    def read_facts(self, session: Session, node_ids: list[str]) -> dict[str, list[PciDevice]]:
        """The free devices of each node."""
        return free_devices_by_node(session, node_ids)

    def fits(self, node: Node, facts: dict[str, list[PciDevice]]) -> bool:
        return self.choose(facts.get(node.id, [])) is not None

    def why_not(self, node: Node, facts: dict[str, list[PciDevice]]) -> str | None:
        """The first request the node's free devices cannot meet even alone, or that they cannot all be met
        together."""
        free = facts.get(node.id, [])
        for (_, need), label in zip(self.needs, self.labels):
            if allocate(free, [need], self.policy) is None:
                return f"no free PCI device for the request {label} ({len(free)} free on the node)"
        return f"the PCI requests {', '.join(self.labels)} cannot all be met together" if self.labels else None

    def claim(self, session: Session, node: Node, instance_id: str) -> None:
        chosen = self.choose(free_devices_by_node(session, [node.id]).get(node.id, []))
        if chosen is None:
            raise ClaimRace(f"the PCI devices on {node.hostname} were claimed concurrently")
        for (request_id, _), addresses in zip(self.needs, chosen):
            for address in addresses:
                result = session.execute(
                    update(PciDeviceRow)
                    .where(PciDeviceRow.node_id == node.id, PciDeviceRow.address == address,
                           PciDeviceRow.status == AVAILABLE)
                    .values(status=ALLOCATED, instance_id=instance_id, request_id=request_id)
                    .execution_options(synchronize_session=False))
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    raise ClaimRace(f"PCI device {address} was claimed concurrently")
        session.expire_all()
        recompute_availability(session, node.id)

    @classmethod
    def release(cls, session: Session, instance_id: str) -> None:
        """Free every device of the instance; devices no longer offered go away."""
        rows = list(session.scalars(select(PciDeviceRow).where(PciDeviceRow.instance_id == instance_id)))
        for row in rows:
            if row.removed:
                session.delete(row)
            else:
                row.status, row.instance_id, row.request_id = AVAILABLE, None, None
        session.flush()
        for node_id in {r.node_id for r in rows}:
            recompute_availability(session, node_id)

    def choose(self, free: list[PciDevice]) -> list[list[str]] | None:
        """Addresses for each need among `free`, or None if they cannot all be met."""
        return allocate(free, [need for _, need in self.needs], self.policy)


def _label(request: PciRequest) -> str:
    """A PCI request as the user made it: `flavor 1:gpu` or `networks.1 (remote-managed VF)`."""
    asked = f"{request.count}:{','.join(request.flavors)}" if request.flavors else ""
    if request.source == "nic":
        what = asked or "a remote-managed VF"
        return f"networks.{request.nic_index} ({what})"
    return f"flavor.pci_passthrough:pci_flavor {asked}"


def free_devices_by_node(session: Session, node_ids: list[str]) -> dict[str, list[PciDevice]]:
    found: dict[str, list[PciDevice]] = defaultdict(list)
    if node_ids:
        rows = session.scalars(select(PciDeviceRow).where(PciDeviceRow.node_id.in_(node_ids),
                                                          PciDeviceRow.status == AVAILABLE,
                                                          PciDeviceRow.removed.is_(False)))
        for row in rows:
            found[row.node_id].append(device_of(row))
    return found
