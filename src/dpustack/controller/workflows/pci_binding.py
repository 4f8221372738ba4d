"""What a port learns from the PCI device behind it (remote-managed ports: the DPU whose card serial it has)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services import pci
from dpustack.db.models import PciDeviceRow, PciRequest, Port
from dpustack.errors import Conflict

REMOTE_MANAGED = "remote-managed"


def devices_by_nic(session: Session, instance_id: str) -> dict[int, PciDeviceRow]:
    """The device allocated to each NIC that asked for one, by NIC index."""
    requests = session.scalars(select(PciRequest).where(PciRequest.instance_id == instance_id,
                                                        PciRequest.source == "nic"))
    by_request = {r.id: r.nic_index for r in requests if r.nic_index is not None}
    found: dict[int, PciDeviceRow] = {}
    for row in pci.allocated_to(session, instance_id):
        index = by_request.get(row.request_id or "")
        if index is not None and index not in found:
            found[index] = row
    return found


def profile(row: PciDeviceRow) -> dict[str, Any]:
    """`binding:profile` entries that identify the function and, through it, its representor."""
    device = pci.device_of(row)
    return {"pci_vendor_info": f"{device.vendor_id}:{device.product_id}", "pci_slot": device.address,
            "physical_network": device.extra_info.get("physical_network"),
            "card_serial_number": device.card_serial_number or None,
            "pf_mac_address": device.pf_mac or None, "vf_num": device.vf_num}


def plugging_host(session: Session, port: Port, row: PciDeviceRow) -> str:
    """For a remote-managed port: the DPU, found by the card serial, that must plug its representor."""
    if port.vnic_type != REMOTE_MANAGED:
        return ""
    serial = pci.device_of(row).card_serial_number
    hostname = pci.dpu_hostname(session, serial) if serial else None
    if hostname is None:
        raise Conflict(f"no DPU has reported card serial number '{serial}' of device {row.address}",
                       field="port")
    return hostname
