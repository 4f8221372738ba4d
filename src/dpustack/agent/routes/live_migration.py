"""A VM's live migration, the node's side: the target's incoming and receive, the source's prepare, migrate,
abort and restore (dpustack.agent.live_moves)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from dpustack.agent.routes.deps import IdPath, ServiceDep
from dpustack.contract.instances import InstanceResult
from dpustack.contract.live_migration import (IncomingOut, IncomingRequest, LiveMigrateOut, LiveMigrateRequest,
                                              ReceiveRequest)
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/instances", tags=["live migration"], responses=error_responses(409, 502))
Uuid = Annotated[str, IdPath]


@router.post("/{uuid}/incoming", response_model=IncomingOut)
def incoming(uuid: Uuid, body: IncomingRequest, service: ServiceDep) -> dict[str, Any]:
    """Target: make the arriving instance's storage and net functions; the domain XML it arrives as and this
    host's hypervisor's migration URI. Undone by deleting the instance here."""
    xml, uri, instance, steps = service.live.incoming(uuid, body)
    return {"xml": xml, "uri": uri, "instance": instance, "steps": steps}


@router.post("/{uuid}/receive", response_model=InstanceResult)
def receive(uuid: Uuid, body: ReceiveRequest, service: ServiceDep) -> dict[str, Any]:
    """Target, after the switch-over: plug the arrived instance's NICs where they were and record it."""
    instance, steps = service.live.receive(uuid, body)
    return {"instance": instance, "steps": steps}


@router.post("/{uuid}/migrate-prepare", response_model=InstanceResult)
def prepare(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    """Source: unplug the running instance's NICs from its guest; 409 for PCI devices."""
    instance, steps = service.live.prepare(uuid)
    return {"instance": instance, "steps": steps}


@router.post("/{uuid}/migrate-restore", response_model=InstanceResult)
def restore(uuid: Uuid, service: ServiceDep) -> dict[str, Any]:
    """Source, after a migration that did not happen: plug the NICs back where they were."""
    instance, steps = service.live.restore(uuid)
    return {"instance": instance, "steps": steps}


@router.post("/{uuid}/migrate-live", response_model=LiveMigrateOut)
def migrate_live(uuid: Uuid, body: LiveMigrateRequest, service: ServiceDep) -> dict[str, Any]:
    """Source: move the running instance to the hypervisor at `uri` as `xml`; answers once it runs there
    (502 when it fails, is aborted or times out: it runs on here)."""
    result = service.live.migrate(uuid, body)
    return {"duration_s": result.duration_s, "downtime_ms": result.downtime_ms, "data_total": result.data_total}


@router.post("/{uuid}/migrate-abort", status_code=204)
def abort(uuid: Uuid, service: ServiceDep) -> None:
    """Source: abort the instance's live migration in progress (502 if none is)."""
    service.live.abort(uuid)
