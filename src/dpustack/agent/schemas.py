"""Request and response bodies of the agent API (docs/api.md, "Agent API")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from dpustack.inputs import Name, UnicastMac

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
BridgeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
PortName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ----------------------------------------------------------------
class CredentialsIn(_Body):
    """A rotated pair: the node's new report token and the SHA-256 of the controller's new credential."""

    report_token: SecretStr = Field(min_length=16, max_length=512)
    controller_credential_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class FlavorSpec(_Body):
    name: Name
    vcpus: int = Field(ge=1)
    ram: int = Field(ge=1, description="MiB")
    disk: int = Field(0, ge=0, description="GiB")


PacketRate = Annotated[int | None, Field(None, ge=1, le=0xFFFFFFFF, description="packets per second; null: none")]


class NicRequest(_Body):
    port_id: Identifier
    mac: UnicastMac
    network_id: str | None = None
    qos_pps: PacketRate = None


class VolumeRequest(_Body):
    volume_id: Identifier
    uri: str = Field(min_length=1)
    bootable: bool = False


class PciAssignment(_Body):
    """A host PCI device the controller allocated to the instance (for bare metal: already in the host)."""

    address: str = Field(min_length=1, max_length=32)
    request_id: str = Field(min_length=1, max_length=64)


class BuildRequest(_Body):
    """Seed 000 ``build_and_run_instance``."""

    uuid: Identifier
    name: Name
    image: str | None = None
    user_data: str | dict[str, Any] | None = None
    flavor: FlavorSpec
    networks: list[NicRequest] = []
    volumes: list[VolumeRequest] = []
    pci_devices: list[PciAssignment] = []


class RebootRequest(_Body):
    type: Literal["hard", "soft"]


class FunctionCreate(_Body):
    id: Identifier | None = None
    mac: UnicastMac | None = None
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


class SwitchPortQos(_Body):
    """The packet-rate limit of a plugged port (what its instance sends); null removes it."""

    pps: PacketRate = None


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
    pci_devices: list[PciAssignment] = []


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


class SwitchPortQosOut(BaseModel):
    port_id: str
    bridge: str
    port_name: str
    pps: int | None


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


class PciDeviceOut(BaseModel):
    """An offered PCI function (``PciDevice.to_dict()``); ``extra_info`` holds its extras and tags."""

    address: str
    vendor_id: str
    product_id: str
    dev_type: str
    class_code: str
    subsystem_vendor_id: str
    subsystem_device_id: str
    numa_node: int | None
    driver: str
    parent_addr: str | None
    vf_num: int | None
    sriov_totalvfs: int | None
    sriov_numvfs: int | None
    sriov_vf_device: str | None
    devname: str
    mac: str
    pf_mac: str
    card_serial_number: str
    vpd_error: str
    extra_info: dict[str, str]


class PciPoolSummaryOut(BaseModel):
    attrs: dict[str, str]
    numa_node: int | None
    dev_type: str
    remote_managed: bool
    count: int


class PciPoolOut(PciPoolSummaryOut):
    addresses: list[str]


class DpuOut(BaseModel):
    hostname: str
    card_serial_number: str


class RepresentorOut(BaseModel):
    representor: str
    pfnum: int
    vfnum: int


class NodeReportOut(BaseModel):
    """Seed 000 ``report_node_status``; GET /v1/status adds ``orphans``. The PCI fields are
    reported by the inventory role (empty without a ``[pci]`` section)."""

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
    pci_flavor_attrs: list[str] = []
    pci_devices: list[PciDeviceOut] = []
    pci_pools: list[PciPoolSummaryOut] = []
    traits: list[str] = []
    dpus: list[DpuOut] = []


class OrphansOut(BaseModel):
    functions: list[str] = []
    ports: list[str] = []
    volumes: list[str] = []


class NodeStatusOut(NodeReportOut):
    orphans: OrphansOut
