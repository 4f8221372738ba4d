"""The agent calls of a VM's live migration (docs/migration.md, "Live migration"): what the controller sends
the target's agent and the source's, and what they answer."""

from __future__ import annotations

from pydantic import BaseModel, Field

from dpustack.contract.fields import Request
from dpustack.contract.instances import BuildRequest, InstanceOut, StepLog


class IncomingRequest(Request):
    """Target: make the instance's functions for its arrival; ``slots`` are the source's guest slots, by
    function id."""

    request: BuildRequest
    slots: dict[str, int]


class IncomingOut(BaseModel):
    """Target: the domain XML the source migrates to, the URI the source's hypervisor reaches this host's at,
    and the functions made (the instance as it will be, not yet recorded)."""

    xml: str
    uri: str
    instance: InstanceOut
    steps: list[StepLog]


class LiveMigrateRequest(Request):
    """Source: move the running domain to the hypervisor at ``uri`` as ``xml``, within ``timeout`` s."""

    uri: str = Field(min_length=1, max_length=1000)
    xml: str = Field(min_length=1)
    timeout: float = Field(300.0, gt=0, le=3600)  # the driver's MIGRATION_TIMEOUT


class LiveMigrateOut(BaseModel):
    """Source: the migration done (the driver's measures: s, ms, bytes; None: not known, the migration ended
    while nobody waited for it)."""

    duration_s: float | None
    downtime_ms: int | None
    data_total: int | None


class ReceiveRequest(Request):
    """Target: the instance arrived; plug its NICs into their ``slots`` (the source's) and record it as
    ``request`` (its flavor, placement, ports and volumes here)."""

    request: BuildRequest
    slots: dict[str, int]
