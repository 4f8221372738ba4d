"""Key pairs: a project's SSH public keys, given to instances through the metadata service."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.api.deps import CallerDep, ContextDep
from dpustack.api.schemas import KeyPairCreate, KeyPairPublic
from dpustack.controller.services import keypairs

router = APIRouter(prefix="/keypairs", tags=["key pairs"])


@router.post("", response_model=KeyPairPublic, status_code=201)
def create_keypair(body: KeyPairCreate, context: ContextDep, caller: CallerDep) -> KeyPairPublic:
    with context.transaction() as session:
        keypair = keypairs.create_keypair(session, caller, name=body.name, public_key=body.public_key)
        return KeyPairPublic.model_validate(keypair)


@router.get("", response_model=list[KeyPairPublic])
def list_keypairs(context: ContextDep, caller: CallerDep) -> list[KeyPairPublic]:
    with context.transaction() as session:
        return [KeyPairPublic.model_validate(k) for k in keypairs.list_keypairs(session, caller)]


@router.get("/{ref}", response_model=KeyPairPublic)
def show_keypair(ref: str, context: ContextDep, caller: CallerDep) -> KeyPairPublic:
    with context.transaction() as session:
        return KeyPairPublic.model_validate(keypairs.get_keypair(session, caller, ref))


@router.delete("/{ref}", status_code=204)
def delete_keypair(ref: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        keypairs.delete_keypair(session, caller, ref)
    return Response(status_code=204)
