"""Request and response bodies of the agent API that only the agent's own users see (docs/api.md,
"Agent API"); the messages the controller exchanges with it are in `dpustack.contract`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from dpustack.contract.fields import Identifier, Request
from dpustack.contract.node import PciPoolSummary
from dpustack.inputs import UnicastMac

BridgeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
PortName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


# -- requests ----------------------------------------------------------------
class FunctionCreate(Request):
    id: Identifier | None = None
    mac: UnicastMac | None = None
    type: Literal["PF", "VF"] = "PF"
    features: list[str] = []


class StorageDeviceCreate(Request):
    id: Identifier | None = None
    volume_id: Identifier
    uri: str = Field(min_length=1)


class SwitchPortCreate(Request):
    bridge: BridgeName
    port_name: PortName
    external_id: Identifier
    pf_id: Identifier | None = None


# -- responses ---------------------------------------------------------------
class FunctionOut(BaseModel):
    id: str
    type: Literal["PF", "VF"]
    kind: Literal["net", "storage"]
    mac: str | None
    bdf: str
    features: list[str]
    representor: str


class SwitchPortOut(BaseModel):
    bridge: str
    port_name: str
    external_ids: dict[str, str]
    pf_id: str | None


class PowerOut(BaseModel):
    power_state: Literal["on", "off"]


class HardwareInfoOut(BaseModel):
    serial_number: str
    cpu: int
    mem: int
    model: str


class PciPoolOut(PciPoolSummary):
    addresses: list[str]


class RepresentorOut(BaseModel):
    representor: str
    pfnum: int
    vfnum: int
