"""Request and response bodies of the agent API (docs/api.md, "Agent API")."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")


def _normal_mac(value: str) -> str:
    value = value.strip().lower()
    if not _MAC.match(value) or len(set(value[2::3])) != 1:
        raise ValueError("not a MAC address like aa:bb:cc:dd:ee:ff")
    return value.replace("-", ":")


Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Mac = Annotated[str, AfterValidator(_normal_mac)]
BridgeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
PortName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ----------------------------------------------------------------
class FlavorSpec(_Body):
    name: str = Field(min_length=1)
    vcpus: int = Field(ge=1)
    ram: int = Field(ge=1, description="MiB")
    disk: int = Field(0, ge=0, description="GiB")


class NicRequest(_Body):
    port_id: Identifier
    mac: Mac
    network_id: str | None = None


class VolumeRequest(_Body):
    volume_id: Identifier
    uri: str = Field(min_length=1)
    bootable: bool = False


class BuildRequest(_Body):
    """Seed 000 ``build_and_run_instance``."""

    uuid: Identifier
    name: str = Field(min_length=1, max_length=255)
    image: str | None = None
    user_data: str | dict[str, Any] | None = None
    flavor: FlavorSpec
    networks: list[NicRequest] = []
    volumes: list[VolumeRequest] = []


class RebootRequest(_Body):
    type: Literal["hard", "soft"]


class FunctionCreate(_Body):
    id: Identifier | None = None
    mac: Mac | None = None
    type: Literal["PF", "VF"] = "PF"
    features: list[str] = []


class StorageDeviceCreate(_Body):
    id: Identifier | None = None
    volume_id: Identifier
    uri: str = Field(min_length=1)


class SwitchPortCreate(_Body):
    bridge: BridgeName
    port_name: PortName
    external_id: Identifier
    pf_id: Identifier | None = None


# -- responses ---------------------------------------------------------------
class StepLogOut(BaseModel):
    name: str
    status: Literal["done", "failed", "undone", "undo_failed"]
    duration_ms: int
    error: str | None = None


class FunctionOut(BaseModel):
    id: str
    type: Literal["PF", "VF"]
    kind: Literal["net", "storage"]
    mac: str | None
    bdf: str
    features: list[str]
    representor: str


class NicOut(BaseModel):
    port_id: str
    mac: str | None
    function_id: str | None
    bdf: str | None
    representor: str | None


class VolumeOut(BaseModel):
    volume_id: str
    uri: str
    bootable: bool
    function_id: str
    bdf: str | None


class InstanceOut(BaseModel):
    uuid: str
    name: str
    status: Literal["ACTIVE", "SHUTOFF", "ERROR"]
    power_state: Literal["on", "off"]
    vcpus: int
    ram: int
    fault: str | None = None
    nics: list[NicOut]
    volumes: list[VolumeOut]


class InstanceResult(BaseModel):
    instance: InstanceOut
    steps: list[StepLogOut]


class StepsResult(BaseModel):
    steps: list[StepLogOut]


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


class ConsoleOut(BaseModel):
    type: str
    url: str


class InstanceStatusOut(BaseModel):
    uuid: str
    status: Literal["up", "down", "error"]


class NodeReportOut(BaseModel):
    """Seed 000 ``report_node_status``; GET /v1/status adds ``orphans``."""

    hostname: str
    ready: bool
    node_type: Literal["bm", "vm"]
    dpu_model: str
    total_cpu: int
    used_cpu: int
    total_mem: int
    used_mem: int
    instances: list[InstanceStatusOut]
    agent_url: str


class OrphansOut(BaseModel):
    functions: list[str] = []
    ports: list[str] = []
    volumes: list[str] = []


class NodeStatusOut(NodeReportOut):
    orphans: OrphansOut
