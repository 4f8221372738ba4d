"""The node as a whole: the report an agent sends the controller (``POST /v1/nodes/report``), the
status the agent answers (``GET /v1/status``: the report and its orphans) and the credentials
rotation (``PUT /v1/credentials``).

The report's limits are the controller's: what its database can hold. A field
with a default may be left out by a sender (an agent without the inventory role
sends no PCI fields).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer

from dpustack.contract.accelerators import ReportedAccelerator
from dpustack.contract.fields import MAX_COUNT, Request
from dpustack.contract.numa import MAX_CELL_ID, NumaCell
from dpustack.instance_states import ReportedStatus

#: A node's hostname: what it is enrolled as and what its agent reports.
HOSTNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.-]*$"


# An instance the node hosts, as its agent sees it.
class ReportedInstance(BaseModel):
    uuid: str = Field(min_length=1, max_length=64)
    status: ReportedStatus


# ``extra_info`` holds its extras and tags. Fields a newer agent adds are kept; an agent sends every field.
class ReportedPciDevice(BaseModel):
    """One offered device as the agent discovered it (dpustack.pci.device.PciDevice)."""

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)
    address: str = Field(min_length=1, max_length=32)
    vendor_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    product_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    dev_type: Literal["type-PF", "type-VF", "type-PCI"]
    class_code: str = ""
    subsystem_vendor_id: str = ""
    subsystem_device_id: str = ""
    numa_node: int | None = Field(default=None, ge=-1, le=1024)
    driver: str = ""
    parent_addr: str | None = Field(default=None, max_length=32)
    vf_num: int | None = None
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    sriov_vf_device: str | None = None
    devname: str = ""
    mac: str = ""
    pf_mac: str = ""
    card_serial_number: str = ""
    vpd_error: str = ""
    extra_info: dict[str, str] = Field(default_factory=dict)


# A pool of offered devices alike in the node's ``pci_flavor_attrs`` (`dpustack.pci.pools.Pool`).
class PciPoolSummary(BaseModel):
    attrs: dict[str, str]
    numa_node: int | None
    dev_type: str
    remote_managed: bool
    count: int


# A DPU in the node, named to the controller by its card serial number.
class ReportedDpu(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # an agent sends both
    hostname: str = Field(min_length=1, max_length=255)
    card_serial_number: str = Field(default="", max_length=255)


# What an agent tells the controller about its node every few seconds. The PCI fields come from the
# inventory role: an agent without a ``[pci]`` section leaves them out; ``numa_cells`` from a hypervisor
# driver (none on a bare-metal node).
class NodeReport(Request):
    """A node's periodic status report: capacity, hardware and health (memory in MiB)."""

    hostname: str = Field(min_length=1, max_length=255, pattern=HOSTNAME_PATTERN)
    ready: bool
    not_ready_reason: str = Field(default="", max_length=1024, description="why the node is not ready, for a "
                                                                            "person; empty when it is")
    node_type: Literal["bm", "vm"]
    dpu_model: str = Field(default="", max_length=64)
    total_cpu: int = Field(ge=0, le=MAX_COUNT)
    used_cpu: int = Field(ge=0, le=MAX_COUNT)
    total_mem: int = Field(ge=0, le=MAX_COUNT)
    used_mem: int = Field(ge=0, le=MAX_COUNT)
    instances: list[ReportedInstance] = []
    agent_url: str = Field(pattern=r"^https?://")
    pci_flavor_attrs: list[str] = Field(default_factory=list, max_length=64)
    pci_devices: list[ReportedPciDevice] = Field(default_factory=list, max_length=65536)
    pci_pools: list[PciPoolSummary] = Field(default_factory=list)
    traits: list[str] = Field(default_factory=list, max_length=256)
    dpus: list[ReportedDpu] = Field(default_factory=list, max_length=64)
    numa_cells: list[NumaCell] = Field(default_factory=list, max_length=MAX_CELL_ID + 1,
                                       description="the host's NUMA cells as its hypervisor offers them to "
                                                   "instances (a VM node's; none on bare metal); cells that "
                                                   "make no host (contract.numa.check_cells) make the node "
                                                   "not ready")
    accelerators: list[ReportedAccelerator] | None = Field(
        default=None, max_length=4096, description="what the node's accelerator drivers discovered; left out "
                                                   "(null) by an agent without any: nothing changes")

    def body(self) -> dict[str, Any]:
        """The JSON body the agent sends: the fields it left unset are left out."""
        return self.model_dump(mode="json", exclude_unset=True)


# What the last reconcile pass found on the node's hardware that the agent has no record of.
class OrphansOut(BaseModel):
    functions: list[str] = []
    ports: list[str] = []
    volumes: list[str] = []


# ``GET /v1/status``: the node report, plus what the last reconcile pass found orphaned.
class NodeStatus(NodeReport):
    orphans: OrphansOut


class CredentialsRotation(Request):
    """A rotated pair: the node's new report token and the SHA-256 of the controller's new credential."""

    report_token: SecretStr = Field(min_length=16, max_length=512)
    controller_credential_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")

    @field_serializer("report_token", when_used="json")
    def _reveal(self, token: SecretStr) -> str:
        """On the wire the token is sent as it is; everywhere else it stays masked."""
        return token.get_secret_value()
