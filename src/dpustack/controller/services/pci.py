"""PCI devices as nodes offer them: inventory from reports, pools, and what each instance holds.

Device status: `available`, `allocated` (to an instance's request) or
`unavailable` (its PF or one of its own VFs is allocated). A device a node
stops offering while it is allocated stays, marked `removed`, until it is
freed: it is neither lost nor handed out again. Claims and frees are the
scheduler's (`resource_requests.pci`).
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.db.models import Dpu, Node, PciDeviceRow
from dpustack.pci.device import PciDevice
from dpustack.pci.pools import group_pools

AVAILABLE, ALLOCATED, UNAVAILABLE = "available", "allocated", "unavailable"


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


def allocated_to(session: Session, instance_id: str, *, node_id: str | None = None) -> list[PciDeviceRow]:
    """The devices the instance holds (on node `node_id` only, if given: a migrating instance holds devices
    on both nodes), by address."""
    query = select(PciDeviceRow).where(PciDeviceRow.instance_id == instance_id)
    if node_id is not None:
        query = query.where(PciDeviceRow.node_id == node_id)
    return list(session.scalars(query.order_by(PciDeviceRow.address)))


def release_on_node(session: Session, instance_id: str, node_id: str) -> None:
    """Free the devices the instance holds on one node (the node a migration left, or the one its revert
    leaves); devices the node no longer offers go away."""
    for row in allocated_to(session, instance_id, node_id=node_id):
        if row.removed:
            session.delete(row)
        else:
            row.status, row.instance_id, row.request_id = AVAILABLE, None, None
    session.flush()
    recompute_availability(session, node_id)
