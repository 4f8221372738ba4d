"""PCI devices and pools (admin), and PCI flavors — under /v1 and under the OpenStack-style `/v2/{project_id}` paths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.api.deps import AdminDep, CallerDep, ContextDep
from dpustack.api.schemas import (PciDevicePublic, PciFlavorCreate, PciFlavorPublic, PciFlavorUpdate,
                                  PciPoolPublic, SeedPciFlavorCreate)
from dpustack.controller.services import nodes, pci, pci_flavors
from dpustack.controller.services.common import Caller
from dpustack.db.models import Node, PciDeviceRow, PciRequest
from dpustack.errors import Forbidden
from dpustack.web.http_errors import error_responses

router = APIRouter(tags=["pci"])
v2 = APIRouter(tags=["pci (/v2/{project_id} paths)"])


def device_public(row: PciDeviceRow, hostname: str) -> PciDevicePublic:
    device = pci.device_of(row)
    return PciDevicePublic(id=row.id, node=hostname, address=row.address, vendor_id=row.vendor_id,
                           product_id=row.product_id, dev_type=row.dev_type, parent_addr=row.parent_addr,
                           numa_node=row.numa_node, status=row.status, removed=row.removed,
                           instance_id=row.instance_id, request_id=row.request_id,
                           card_serial_number=device.card_serial_number, vf_num=device.vf_num,
                           pf_mac=device.pf_mac, devname=device.devname, extra_info=device.extra_info)


def pci_requests_view(session: Session, instance_id: str) -> list[dict[str, Any]]:
    """An instance's PCI requests, each with the devices allocated to it."""
    devices = pci.allocated_to(session, instance_id)
    hostnames = {n.id: n.hostname for n in session.scalars(select(Node))} if devices else {}
    requests = session.scalars(select(PciRequest).where(PciRequest.instance_id == instance_id)
                               .order_by(PciRequest.created_at, PciRequest.id))
    return [{"id": r.id, "count": r.count, "flavors": r.flavors, "spec": r.specs, "source": r.source,
             "nic_index": r.nic_index,
             "devices": [device_public(d, hostnames.get(d.node_id, "")).model_dump()
                         for d in devices if d.request_id == r.id]}
            for r in requests]


def _nodes(session: Session, node: str | None) -> list[Node]:
    return [nodes.get_node(session, node)] if node else nodes.list_nodes(session)


@router.get("/pci/devices", response_model=list[PciDevicePublic], responses=error_responses(404))
def list_devices(context: ContextDep, _: AdminDep, node: str | None = None) -> list[PciDevicePublic]:
    with context.transaction() as session:
        return [device_public(row, n.hostname) for n in _nodes(session, node)
                for row in pci.list_devices(session, n.id)]


@router.get("/pci/pools", response_model=list[PciPoolPublic], responses=error_responses(404))
def list_pools(context: ContextDep, _: AdminDep, node: str | None = None) -> list[PciPoolPublic]:
    with context.transaction() as session:
        return [PciPoolPublic(**pool) for pool in pci.list_pools(session, _nodes(session, node))]


# -- PCI flavors, /v1 -----------------------------------------------------------------
@router.get("/pci-flavors", response_model=list[PciFlavorPublic])
def list_pci_flavors(context: ContextDep, _: CallerDep) -> list[PciFlavorPublic]:
    with context.transaction() as session:
        return [PciFlavorPublic(**f) for f in pci_flavors.list_all(session)]


@router.get("/pci-flavors/{ref}", response_model=PciFlavorPublic)
def show_pci_flavor(ref: str, context: ContextDep, _: CallerDep) -> PciFlavorPublic:
    with context.transaction() as session:
        return PciFlavorPublic(**pci_flavors.show(session, ref))


@router.post("/pci-flavors", response_model=PciFlavorPublic, status_code=201)
def create_pci_flavor(body: PciFlavorCreate, context: ContextDep, _: AdminDep) -> PciFlavorPublic:
    with context.transaction() as session:
        return PciFlavorPublic(**pci_flavors.view(pci_flavors.create(session, name=body.name,
                                                                     description=body.description)))


@router.put("/pci-flavors/{ref}", response_model=PciFlavorPublic)
def update_pci_flavor(ref: str, body: PciFlavorUpdate, context: ContextDep, _: AdminDep) -> PciFlavorPublic:
    with context.transaction() as session:
        return PciFlavorPublic(**pci_flavors.view(pci_flavors.update(session, ref, body.pci_flavor)))


@router.delete("/pci-flavors/{ref}", status_code=204)
def delete_pci_flavor(ref: str, context: ContextDep, _: AdminDep) -> Response:
    with context.transaction() as session:
        pci_flavors.delete(session, ref)
    return Response(status_code=204)


# -- PCI flavors, /v2/{project_id} paths ----------------------------------------------------
def _seed_view(flavor: dict[str, Any]) -> dict[str, Any]:
    return {"UUID": flavor["id"], "name": flavor["name"], "description": flavor["description"], **flavor["spec"]}


def _check_project(caller: Caller, project_id: str) -> None:
    if project_id != caller.project_id and not caller.is_admin:
        raise Forbidden("the project in the path is not the token's project", field="project_id")


@v2.get("/{project_id}/os-pci-flavors")
def seed_list(project_id: str, context: ContextDep, caller: CallerDep) -> dict[str, Any]:
    _check_project(caller, project_id)
    with context.transaction() as session:
        return {"os-pci-flavors": [_seed_view(f) for f in pci_flavors.list_all(session)]}


@v2.get("/{project_id}/os-pci-flavor/{ref}")
@v2.get("/{project_id}/os-pci-flavors/{ref}")
def seed_show(project_id: str, ref: str, context: ContextDep, caller: CallerDep) -> dict[str, Any]:
    _check_project(caller, project_id)
    with context.transaction() as session:
        return {"os-pci-flavor": _seed_view(pci_flavors.show(session, ref))}


@v2.post("/{project_id}/os-pci-flavors", status_code=201)
def seed_create(project_id: str, body: SeedPciFlavorCreate, context: ContextDep, caller: AdminDep) -> dict[str, Any]:
    _check_project(caller, project_id)
    with context.transaction() as session:
        flavor = pci_flavors.create(session, name=body.pci_flavor.name, description=body.pci_flavor.description)
        return {"os-pci-flavor": _seed_view(pci_flavors.view(flavor))}


@v2.put("/{project_id}/os-pci-flavors/{ref}")
@v2.put("/{project_id}/os-pci-flavor/{ref}")
def seed_update(project_id: str, ref: str, body: PciFlavorUpdate, context: ContextDep,
                caller: AdminDep) -> dict[str, Any]:
    _check_project(caller, project_id)
    with context.transaction() as session:
        return {"os-pci-flavor": _seed_view(pci_flavors.view(pci_flavors.update(session, ref, body.pci_flavor)))}


@v2.delete("/{project_id}/os-pci-flavor/{ref}", status_code=204)
@v2.delete("/{project_id}/os-pci-flavors/{ref}", status_code=204)
def seed_delete(project_id: str, ref: str, context: ContextDep, caller: AdminDep) -> Response:
    _check_project(caller, project_id)
    with context.transaction() as session:
        pci_flavors.delete(session, ref)
    return Response(status_code=204)
