"""Flavors: everyone reads, admins write."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.api.deps import AdminDep, CallerDep, ContextDep
from dpustack.api.schemas import ExtraSpecs, FlavorCreate, FlavorPublic
from dpustack.controller.services import flavors

router = APIRouter(prefix="/flavors", tags=["flavors"])


@router.post("", response_model=FlavorPublic, status_code=201)
def create_flavor(body: FlavorCreate, context: ContextDep, _: AdminDep) -> FlavorPublic:
    with context.transaction() as session:
        return FlavorPublic.model_validate(flavors.create_flavor(session, **body.model_dump()))


@router.get("", response_model=list[FlavorPublic])
def list_flavors(context: ContextDep, _: CallerDep) -> list[FlavorPublic]:
    with context.transaction() as session:
        return [FlavorPublic.model_validate(f) for f in flavors.list_flavors(session)]


@router.get("/{ref}", response_model=FlavorPublic)
def show_flavor(ref: str, context: ContextDep, _: CallerDep) -> FlavorPublic:
    with context.transaction() as session:
        return FlavorPublic.model_validate(flavors.get_flavor(session, ref))


@router.delete("/{ref}", status_code=204)
def delete_flavor(ref: str, context: ContextDep, _: AdminDep) -> Response:
    with context.transaction() as session:
        flavors.delete_flavor(session, ref)
    return Response(status_code=204)


@router.put("/{ref}/extra-specs", response_model=FlavorPublic)
def set_extra_specs(ref: str, body: ExtraSpecs, context: ContextDep, _: AdminDep) -> FlavorPublic:
    """Merge extra specs, e.g. `pci_passthrough:pci_flavor` (checked against the PCI flavors)."""
    with context.transaction() as session:
        return FlavorPublic.model_validate(flavors.set_extra_specs(session, ref, dict(body.model_extra or {})))


@router.delete("/{ref}/extra-specs/{key}", response_model=FlavorPublic)
def unset_extra_spec(ref: str, key: str, context: ContextDep, _: AdminDep) -> FlavorPublic:
    with context.transaction() as session:
        return FlavorPublic.model_validate(flavors.unset_extra_spec(session, ref, key))
