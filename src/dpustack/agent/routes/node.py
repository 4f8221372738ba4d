"""The node as a whole: its report and orphans."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dpustack.agent.routes.deps import ServiceDep
from dpustack.contract.node import NodeStatus

router = APIRouter(prefix="/v1", tags=["node"])


@router.get("/status", response_model=NodeStatus)
def status(service: ServiceDep) -> dict[str, Any]:
    """The NodeReport sent to the controller, plus what the last reconcile found orphaned."""
    return service.status()
