"""PCI devices as nodes offer them: inventory from reports, pools, claims and frees.

Device status: `available`, `allocated` (to an instance's request) or
`unavailable` (its PF or one of its own VFs is allocated). A device a node
stops offering while it is allocated stays, marked `removed`, until it is
freed: it is neither lost nor handed out again.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dpustack.db.models import Dpu, Node, PciDeviceRow
from dpustack.errors import Conflict
from dpustack.pci import claims
from dpustack.pci.device import PciDevice
from dpustack.pci.pools import group_pools

AVAILABLE, ALLOCATED, UNAVAILABLE = "available", "allocated", "unavailable"


class ClaimRace(Conflict):
    """Another claim took a chosen device first; schedule again."""


def device_of(row: PciDeviceRow) -> PciDevice:
    return PciDevice.from_dict(row.info)


# -- inventory ------------------------------------------------------------------
def record_inventory(session: Session, node: Node, report: dict[str, Any]) -> None:
    """Bring the node's devices, traits and DPUs in line with its report."""
    node.traits = sorted(set(report.get("traits") or []))
    node.pci_flavor_attrs = list(report.get("pci_flavor_attrs") or [])
    offered = {d["address"]: d for d in report.get("pci_devices") or []}
    rows = {r.address: r for r in session.scalars(select(PciDeviceRow).where(PciDeviceRow.node_id == node.id))}
    for address, row in rows.items():
        if address in offered:
            _refresh(row, offered[address])
            row.removed = False
        elif row.status == ALLOCATED:
            row.removed = True
        else:
            session.delete(row)
    for address, data in offered.items():
        if address not in rows:
            session.add(PciDeviceRow(node_id=node.id, address=address, info=data, status=AVAILABLE,
                                     **_columns(data)))
    session.flush()
    recompute_availability(session, node.id)
    _record_dpus(session, node, report.get("dpus") or [])


def _columns(data: dict[str, Any]) -> dict[str, Any]:
    return {"vendor_id": data["vendor_id"], "product_id": data["product_id"],
            "dev_type": data.get("dev_type", "type-PCI"), "parent_addr": data.get("parent_addr"),
            "numa_node": data.get("numa_node")}


def _refresh(row: PciDeviceRow, data: dict[str, Any]) -> None:
    if row.info != data:
        row.info = data
        for key, value in _columns(data).items():
            setattr(row, key, value)


def _record_dpus(session: Session, node: Node, dpus: list[dict[str, Any]]) -> None:
    for dpu in dpus:
        serial = dpu.get("card_serial_number")
        if not serial:
            continue
        row = session.get(Dpu, serial)
        if row is None:
            session.add(Dpu(card_serial_number=serial, hostname=dpu["hostname"], node_id=node.id))
        else:
            row.hostname, row.node_id = dpu["hostname"], node.id


def recompute_availability(session: Session, node_id: str) -> None:
    """A PF with an allocated VF, or a VF whose PF is allocated, cannot be claimed."""
    rows = list(session.scalars(select(PciDeviceRow).where(PciDeviceRow.node_id == node_id)))
    allocated = {r.address for r in rows if r.status == ALLOCATED}
    parents_in_use = {r.parent_addr for r in rows if r.status == ALLOCATED and r.parent_addr}
    for row in rows:
        if row.status == ALLOCATED:
            continue
        blocked = row.address in parents_in_use or (row.parent_addr in allocated)
        wanted = UNAVAILABLE if blocked else AVAILABLE
        if row.status != wanted:
            row.status = wanted


def dpu_hostname(session: Session, card_serial_number: str) -> str | None:
    row = session.get(Dpu, card_serial_number)
    return row.hostname if row else None


# -- listing --------------------------------------------------------------------
def list_devices(session: Session, node_id: str | None = None) -> list[PciDeviceRow]:
    query = select(PciDeviceRow).order_by(PciDeviceRow.node_id, PciDeviceRow.address)
    if node_id:
        query = query.where(PciDeviceRow.node_id == node_id)
    return list(session.scalars(query))


def list_pools(session: Session, nodes: Iterable[Node]) -> list[dict[str, Any]]:
    """Per node, its devices grouped by its pci_flavor_attrs, with free and used counts."""
    pools = []
    for node in nodes:
        rows = {r.address: r for r in list_devices(session, node.id)}
        attrs = node.pci_flavor_attrs or ["vendor_id", "product_id", "extra_info"]
        for pool in group_pools([device_of(r) for r in rows.values()], attrs):
            statuses = [rows[a].status for a in pool.addresses]
            pools.append({"node": node.hostname, "attrs": pool.attrs, "numa_node": pool.numa_node,
                          "dev_type": pool.dev_type, "remote_managed": pool.remote_managed,
                          "count": pool.count, "free": statuses.count(AVAILABLE),
                          "used": statuses.count(ALLOCATED)})
    return pools


# -- claims -----------------------------------------------------------------------
def free_devices_by_node(session: Session, node_ids: list[str]) -> dict[str, list[PciDevice]]:
    found: dict[str, list[PciDevice]] = defaultdict(list)
    if node_ids:
        rows = session.scalars(select(PciDeviceRow).where(PciDeviceRow.node_id.in_(node_ids),
                                                          PciDeviceRow.status == AVAILABLE,
                                                          PciDeviceRow.removed.is_(False)))
        for row in rows:
            found[row.node_id].append(device_of(row))
    return found


def claim(session: Session, node_id: str, instance_id: str, needs: list[tuple[str, claims.Need]],
          policy: str) -> bool:
    """Allocate devices on one node for every (request id, need), all or nothing.

    Returns False if the node cannot meet the needs; raises ClaimRace if a
    concurrent claim took a chosen device (the caller's transaction must
    then roll back and schedule again).
    """
    if not needs:
        return True
    free = free_devices_by_node(session, [node_id]).get(node_id, [])
    chosen = claims.allocate(free, [need for _, need in needs], policy)
    if chosen is None:
        return False
    for (request_id, _), addresses in zip(needs, chosen):
        for address in addresses:
            result = session.execute(
                update(PciDeviceRow)
                .where(PciDeviceRow.node_id == node_id, PciDeviceRow.address == address,
                       PciDeviceRow.status == AVAILABLE)
                .values(status=ALLOCATED, instance_id=instance_id, request_id=request_id)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise ClaimRace(f"PCI device {address} was claimed concurrently")
    session.expire_all()
    recompute_availability(session, node_id)
    return True


def release(session: Session, instance_id: str) -> None:
    """Free every device of an instance; devices no longer offered go away."""
    rows = list(session.scalars(select(PciDeviceRow).where(PciDeviceRow.instance_id == instance_id)))
    for row in rows:
        if row.removed:
            session.delete(row)
        else:
            row.status, row.instance_id, row.request_id = AVAILABLE, None, None
    session.flush()
    for node_id in {r.node_id for r in rows}:
        recompute_availability(session, node_id)


def allocated_to(session: Session, instance_id: str) -> list[PciDeviceRow]:
    return list(session.scalars(select(PciDeviceRow).where(PciDeviceRow.instance_id == instance_id)
                                .order_by(PciDeviceRow.address)))
