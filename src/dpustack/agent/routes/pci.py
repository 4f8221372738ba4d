"""The inventory role: offered PCI devices, their pools, and representor lookup on the DPU side."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from dpustack.agent.inventory import Inventory
from dpustack.agent.routes.deps import ServiceDep
from dpustack.agent.schemas import PciPoolOut, RepresentorOut
from dpustack.contract.node import ReportedPciDevice
from dpustack.errors import NotFound
from dpustack.web.http_errors import may_answer

router = APIRouter(prefix="/v1", tags=["pci"])


@may_answer(404)
def get_inventory(service: ServiceDep) -> Inventory:
    if service.inventory is None:
        raise NotFound("the inventory role is off: agent.toml has no [pci] section", field="pci")
    return service.inventory


InventoryDep = Annotated[Inventory, Depends(get_inventory)]


@router.get("/pci/devices", response_model=list[ReportedPciDevice])
def list_devices(inventory: InventoryDep) -> list[dict[str, Any]]:
    """The devices this node offers, as of the last reconcile pass."""
    return [device.to_dict() for device in inventory.snapshot.offered]


@router.get("/pci/pools", response_model=list[PciPoolOut])
def list_pools(inventory: InventoryDep) -> list[dict[str, Any]]:
    return [{**pool.summary(), "addresses": pool.addresses} for pool in inventory.snapshot.pools]


@router.get("/representors", response_model=RepresentorOut)
def find_representor(inventory: InventoryDep, pf_mac: Annotated[str, Query(max_length=32)],
                     vf_num: Annotated[int, Query(ge=0, le=65535)]) -> dict[str, Any]:
    """The VF representor for (host PF MAC, VF logical number); 404 names the field not found."""
    port = inventory.representor(pf_mac, vf_num)
    return {"representor": port.netdev, "pfnum": port.pfnum, "vfnum": port.vfnum}
