"""What a port learns from the PCI device behind it (remote-managed ports: the DPU whose card serial it has),
and what a VM's node is told of a remote-managed NIC's VF."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.contract.instances import NicVf
from dpustack.controller.services import pci
from dpustack.db.models import Node, PciDeviceRow, PciRequest, Port
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


def vm_nic_vf(session: Session, port: Port, row: PciDeviceRow, node: Node) -> NicVf | None:
    """For a remote-managed port of a VM: the VF the node passes through, whose representor its DPU plugs.

    None for other ports and on bare metal. A Conflict naming `port` when the VF's card is run by another
    node's DPU: a VM node's agent plugs representors on its own DPU only.
    """
    if port.vnic_type != REMOTE_MANAGED or node.node_type != "vm":
        return None
    plugger = plugging_host(session, port, row)
    if plugger != node.hostname:
        raise Conflict(f"VF {row.address} of port {port.id} is on card '{pci.device_of(row).card_serial_number}', "
                       f"whose DPU is {plugger}, not {node.hostname}'s: a VM's remote-managed NIC is plugged by "
                       "its own node's DPU", field="port")
    device = pci.device_of(row)
    return NicVf(address=device.address, pf_mac=device.pf_mac, vf_num=device.vf_num)
