"""A plugged port's packet-rate limit: ``PUT /v1/switch/ports/{port_id}/qos`` on the agent."""

from __future__ import annotations

from pydantic import BaseModel

from dpustack.contract.fields import PacketRate, Request


class SwitchPortQos(Request):
    """The packet-rate limit of a plugged port (what its instance sends); null removes it."""

    pps: PacketRate = None


class SwitchPortQosOut(BaseModel):
    port_id: str
    bridge: str
    port_name: str
    pps: int | None
