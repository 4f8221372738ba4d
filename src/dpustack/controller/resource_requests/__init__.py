"""What instances ask of nodes besides CPU and RAM, one kind per module; `KINDS` lists them all."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dpustack.controller.resource_requests.base import ClaimRace, ResourceRequest
from dpustack.controller.resource_requests.numa import NumaCells
from dpustack.controller.resource_requests.pci import PciDevices

__all__ = ["KINDS", "ClaimRace", "NumaCells", "PciDevices", "ResourceRequest", "of_instance", "release_all"]

KINDS: tuple[type[ResourceRequest], ...] = (PciDevices, NumaCells)


def of_instance(session: Session, instance_id: str, params: dict[str, Any]) -> tuple[ResourceRequest, ...]:
    """The instance's requests, one per kind it asks for, in the order of `KINDS`."""
    found = (kind.of_instance(session, instance_id, params) for kind in KINDS)
    return tuple(request for request in found if request is not None)


def release_all(session: Session, instance_id: str) -> None:
    """Free everything the instance holds, of every kind."""
    for kind in KINDS:
        kind.release(session, instance_id)
