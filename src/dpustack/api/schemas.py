"""Request and response bodies of the controller API: one Create / Public pair per resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from dpustack.contract.node import HOSTNAME_PATTERN
from dpustack.contract.numa import NumaCell, NumaPlacement
from dpustack.inputs import Name, OptionalName, UnicastMac

# Sizes the volume files (ext4: 16 TiB) can hold.
MAX_RAM_MIB = 16 * 1024 * 1024
MAX_DISK_GIB = 16 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- identity -----------------------------------------------------------------
class WhoAmI(BaseModel):
    project_id: str
    project_name: str
    role: str


class ProjectCreate(Strict):
    name: Name


class ProjectPublic(Public):
    id: str
    name: str
    created_at: datetime


class TokenCreate(Strict):
    project: str = Field(min_length=1)
    role: Literal["admin", "member", "agent"] = "member"
    name: OptionalName = ""
    node: str | None = Field(default=None, min_length=1, max_length=255,
                             description="agent tokens only: the node (hostname or id) the token speaks for")


class TokenPublic(Public):
    id: str
    project_id: str
    role: str
    name: str
    node_id: str | None = None
    created_at: datetime


class TokenCreated(TokenPublic):
    token: str


# -- nodes --------------------------------------------------------------------
class NodeEnroll(Strict):
    """A node that may join: its agent's hostname (what it will report) and its type."""

    hostname: str = Field(min_length=1, max_length=255, pattern=HOSTNAME_PATTERN)
    node_type: Literal["bm", "vm"] = "bm"


class NodeUpdate(Strict):
    maintenance: bool = Field(description="true: never scheduled; its instances stay")


class HugePagesFree(BaseModel):
    size_kib: int
    free: int


class NumaCellFree(BaseModel):
    """What a cell has left for new instances: its figures minus what the host's other domains use minus
    the placements the node's instances hold."""

    cpus: int = Field(description="shared vCPUs it can still take: its shared CPUs no domain and no instance "
                                  "pins, less the shared vCPUs placed in it (nothing is over-committed)")
    pinnable_cpus: list[int] = Field(description="CPUs a dedicated vCPU can be pinned to now, the lowest first: "
                                                 "its dedicated CPUs no domain or instance pins (without a "
                                                 "split: of those no shared instance floats over, at most "
                                                 "`cpus`)")
    memory_mib: int = Field(description="small-page memory: its memory less its huge page pools, less what "
                                        "the host's domains use and the small-page placements hold")
    hugepages: list[HugePagesFree] = Field(description="free pages of each huge page size")


class NumaCellPublic(NumaCell):
    """A host cell as the node reported it, and what is free in it."""

    free: NumaCellFree


class NodePublic(Public):
    id: str
    hostname: str
    status: str = Field(description="enrolled (never reported), up or down")
    maintenance: bool
    ready: bool
    not_ready_reason: str = Field(description="why it is not ready (its agent's reason, or the controller's "
                                              "for NUMA cells no host has); empty when ready")
    node_type: str
    dpu_model: str
    agent_url: str
    total_cpu: int
    used_cpu: int
    total_mem: int
    used_mem: int
    claimed_cpu: int
    claimed_mem: int
    instance_count: int
    traits: list[str]
    pci_flavor_attrs: list[str]
    instances: list[dict[str, Any]] = Field(validation_alias="reported_instances")
    numa_cells: list[NumaCellPublic] = Field(default_factory=list, description="a VM node's host cells (none "
                                                                                "on bare metal)")
    last_seen: datetime
    joined_at: datetime | None
    created_at: datetime


class NodeEnrolled(BaseModel):
    """The enrolled node and, shown only now, what its agent.toml needs: ``[controller] token`` and
    ``[api] controller_credential_sha256``."""

    node: NodePublic
    report_token: str
    controller_credential_sha256: str


# -- flavors and images -------------------------------------------------------
class FlavorCreate(Strict):
    name: Name
    vcpus: int = Field(ge=1, le=4096)
    ram: int = Field(ge=1, le=MAX_RAM_MIB, description="MiB")
    disk: int = Field(ge=1, le=MAX_DISK_GIB, description="GiB")
    type: Literal["bm", "vm"]


class ExtraSpecs(BaseModel):
    """Flavor extra specs to set, e.g. {"pci_passthrough:pci_flavor": "1:bigGPU"}."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _strings(self) -> "ExtraSpecs":
        extra = self.model_extra or {}
        if not extra:
            raise ValueError("give at least one KEY: VALUE")
        for key, value in extra.items():
            if not isinstance(value, str) or not key or len(key) > 255 or len(value) > 4096:
                raise ValueError(f"{key}: keys and values are strings (values up to 4096 characters)")
        return self


class FlavorPublic(Public):
    id: str
    name: str
    vcpus: int
    ram: int
    disk: int
    type: str
    extra_specs: dict[str, Any]


DiskFormat = Literal["raw", "qcow2"]


class ImageCreate(Strict):
    name: Name
    visibility: Literal["private", "public"] = "private"
    disk_format: DiskFormat = Field(default="raw", description="what the uploaded file must be (qemu-img checks)")


class ImagePublic(Public):
    id: str
    name: str
    project_id: str
    status: str = Field(description="queued (no data yet), saving (uploading), active, or deleting (its delete "
                                    "operation is flattening the volumes made from it)")
    size: int
    checksum: str
    visibility: str
    disk_format: str
    virtual_size: int = Field(description="bytes of disk the image holds; a qcow2 file is smaller")
    created_at: datetime


# -- networks, ports, volumes --------------------------------------------------
class NetworkCreate(Strict):
    name: Name
    subnet: str | None = Field(default=None, description="CIDR of a first subnet, made as POST /v1/subnets would")


class SubnetCreate(Strict):
    """An IPv4 subnet; address checks (gateway inside the CIDR, overlaps) are the service's."""

    network: str = Field(min_length=1, description="network name or id")
    cidr: str = Field(min_length=1, max_length=64)
    name: OptionalName = ""
    gateway_ip: str | None = Field(default=None, min_length=1, max_length=64, description="default: first host")
    dns_nameservers: list[str] = Field(default_factory=list, max_length=5)
    enable_dhcp: bool = True


class SubnetPublic(Public):
    id: str
    name: str
    network_id: str
    cidr: str
    gateway_ip: str
    dns_nameservers: list[str]
    enable_dhcp: bool
    created_at: datetime


class NetworkPublic(Public):
    id: str
    name: str
    project_id: str
    subnets: list[SubnetPublic]
    created_at: datetime


VnicType = Literal["normal", "direct", "remote-managed"]


# Security groups by name or id; omitted: the project's `default` group.
SecurityGroupRefs = Field(default=None, min_length=1, max_length=64)


class PortCreate(Strict):
    network: str = Field(min_length=1)
    name: OptionalName = ""
    mac: UnicastMac | None = None
    vnic_type: VnicType = "normal"
    security_groups: list[str] | None = SecurityGroupRefs


class PortUpdate(Strict):
    """Replace the port's security groups."""

    security_groups: list[str] = Field(min_length=1, max_length=64)


# Port QoS: limits on what the port's instance sends; null (or absent): unlimited.
MAX_BIGINT = 2**63 - 1
QosLimit = Field(default=None, ge=1, le=MAX_BIGINT, strict=True)


class PortQosUpdate(Strict):
    """Replace the port's limits (bits and packets per second); `{}` clears both."""

    bps: int | None = QosLimit
    pps: int | None = QosLimit


class PortQos(BaseModel):
    bps: int | None
    pps: int | None


class FixedIp(BaseModel):
    subnet_id: str
    ip_address: str


class PortPublic(Public):
    id: str
    name: str
    project_id: str
    network_id: str
    mac_address: str
    fixed_ips: list[FixedIp]
    instance_id: str | None
    status: str
    binding_host_id: str
    binding_profile: dict[str, Any]
    vnic_type: str
    requested_chassis: str
    security_groups: list[str]
    qos: PortQos
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _fixed_ips(cls, port: Any) -> Any:
        if isinstance(port, dict):
            return port
        ips = [{"subnet_id": port.subnet_id, "ip_address": port.ip_address}] if port.ip_address else []
        computed = {"fixed_ips": ips, "security_groups": [group.id for group in port.security_groups],
                    "qos": {"bps": port.qos_bps, "pps": port.qos_pps}}
        return {**{k: getattr(port, k) for k in cls.model_fields if k not in computed}, **computed}


class SecurityGroupCreate(Strict):
    name: Name
    description: str = Field(default="", max_length=255)


class SecurityGroupRuleCreate(Strict):
    """One allow rule; cross-field checks (ports only with tcp/udp, min <= max, CIDR) are the service's."""

    direction: Literal["ingress", "egress"]
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"
    protocol: Literal["tcp", "udp", "icmp"] | None = None
    port_range_min: int | None = Field(default=None, ge=1, le=65535)
    port_range_max: int | None = Field(default=None, ge=1, le=65535)
    remote_ip_prefix: str | None = Field(default=None, min_length=1, max_length=64, description="CIDR")
    remote_group: str | None = Field(default=None, min_length=1, description="security group name or id")


class SecurityGroupRulePublic(Public):
    id: str
    security_group_id: str
    direction: str
    ethertype: str
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    created_at: datetime


class SecurityGroupPublic(Public):
    id: str
    name: str
    description: str
    project_id: str
    rules: list[SecurityGroupRulePublic]
    created_at: datetime


class VolumeCreate(Strict):
    """An empty volume, or one made copy-on-write from an image or a snapshot (not both)."""

    name: Name
    size: int | None = Field(default=None, ge=1, le=MAX_DISK_GIB,
                             description="GiB; needed for an empty volume; default: the snapshot's size, or "
                                         "the image's disk rounded up to whole GiB")
    image: str | None = Field(default=None, min_length=1, description="image name or id")
    snapshot: str | None = Field(default=None, min_length=1, description="snapshot name or id")


class VolumeExtend(Strict):
    size: int = Field(ge=1, le=MAX_DISK_GIB, description="the new size in GiB, larger than the volume's")


class SnapshotCreate(Strict):
    name: Name


class Fault(BaseModel):
    """Why a resource is in `error`: a message, and the step and operation that failed."""

    message: str
    step: str | None = None
    operation_id: str | None = None


class VolumeAttachmentPublic(BaseModel):
    """Where an attached volume is served: its export (`id`) to a storage function of the server's DPU."""

    id: str = Field(description="the attachment id, which names the volume backend's export")
    server_id: str
    server: str | None = Field(description="the server's name")
    node: str | None = Field(description="the node whose DPU attaches it; null until its agent answered")
    function_id: str | None = Field(description="the DPU storage function serving it")
    bdf: str | None = Field(description="that function's PCI address on the host")


class VolumePublic(Public):
    id: str
    name: str
    project_id: str
    size: int
    status: Literal["creating", "available", "attaching", "in-use", "detaching", "extending", "error"]
    fault: Fault | None
    image_id: str | None = Field(description="the image whose data the volume shares; null once flattened")
    snapshot_id: str | None = Field(description="the snapshot whose data the volume shares; null once flattened")
    instance_id: str | None
    attachments: list[VolumeAttachmentPublic]
    operation_id: str | None = Field(description="the operation changing the volume now (e.g. its creation)")
    bootable: bool
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _attachments(cls, volume: Any) -> Any:
        if isinstance(volume, dict):
            return volume
        attachments = []
        if volume.attachment_id and volume.instance_id:
            attachments.append({"id": volume.attachment_id, "server_id": volume.instance_id,
                                "server": volume.instance.name if volume.instance else None,
                                "node": volume.attached_node, "function_id": volume.function_id, "bdf": volume.bdf})
        return {**{k: getattr(volume, k) for k in cls.model_fields if k != "attachments"},
                "attachments": attachments}


class SnapshotPublic(Public):
    id: str
    name: str
    project_id: str
    volume_id: str
    size: int = Field(description="GiB: the volume's size when the snapshot was taken")
    status: Literal["creating", "available", "deleting", "error"]
    fault: Fault | None
    instance_id: str | None = Field(description="the server the volume was attached to when it was taken")
    node: str | None = Field(description="that server's node")
    operation_id: str | None = Field(description="the operation taking or deleting the snapshot now")
    created_at: datetime


# -- key pairs ------------------------------------------------------------------------
class KeyPairCreate(Strict):
    name: Name
    public_key: str = Field(min_length=1, max_length=16384, description="OpenSSH format: TYPE BASE64 [COMMENT]")


class KeyPairPublic(Public):
    id: str
    name: str
    project_id: str
    fingerprint: str
    public_key: str
    type: Literal["ssh"] = "ssh"
    created_at: datetime


# -- instances and operations ---------------------------------------------------
class NicRequest(Strict):
    network: str | None = None
    port: str | None = None
    pci_flavor: str | None = Field(default=None, max_length=1024, description="e.g. 1:phyX_NIC")
    vnic_type: VnicType | None = None
    security_groups: list[str] | None = SecurityGroupRefs

    @model_validator(mode="after")
    def _one_of(self) -> "NicRequest":
        if bool(self.network) == bool(self.port):
            raise ValueError("give exactly one of network or port")
        return self


class InstanceCreate(Strict):
    name: Name
    flavor: str = Field(min_length=1)
    image: str | None = None
    networks: list[NicRequest] = Field(default_factory=list, max_length=16)
    user_data: str | None = Field(default=None, max_length=65536)
    node: str | None = None
    # -- metadata service: a key pair of the instance's project; the password is stored encrypted
    key_name: str | None = Field(default=None, min_length=1, max_length=255)
    admin_pass: SecretStr | None = Field(default=None, min_length=1, max_length=255)


class AdminPasswordReset(Strict):
    new_password: SecretStr = Field(min_length=1, max_length=255,
                                    description="the new password: a bare-metal host takes it at its next boot, "
                                                "from the metadata service (meta_data.json `admin_pass`); a VM "
                                                "gets it for root now, through its guest agent, and from the "
                                                "metadata service too; stored encrypted, never shown")


class RebootRequest(Strict):
    type: Literal["hard", "soft"] = "soft"


class InstanceResize(Strict):
    flavor: str = Field(min_length=1, description="the new flavor, by name or id: a vm flavor other than the "
                                                  "VM's, with a disk at least as large")


class InstanceMigrate(Strict):
    """A migration to another node (chosen by the scheduler, or `node`): cold, with another flavor if given, or
    `live` (a running VM, its own flavor)."""

    node: str | None = Field(default=None, min_length=1, description="the target node, by hostname or id "
                                                                     "(admin only); not the instance's own")
    flavor: str | None = Field(default=None, min_length=1, description="the flavor on the target, by name or id: "
                                                                       "needed to change the node type (a bm "
                                                                       "flavor moves a VM to bare metal, a vm "
                                                                       "flavor a host to a VM); default: its own")
    live: bool = Field(default=False, description="a live migration (the operation `live_migrate`): a running "
                                                  "VM moves while its guest runs on, ACTIVE on the target after "
                                                  "(no confirm); 409 for bare metal, another flavor, a VM that "
                                                  "does not run or has PCI devices")


class OldFlavor(BaseModel):
    """What an instance had before a resize or a migration that waits for its confirm or revert; its claims
    count until the confirm."""

    id: str | None
    name: str | None
    vcpus: int
    ram: int
    disk: int
    numa_placement: NumaPlacement | None


class VolumeAttach(Strict):
    volume: str = Field(min_length=1)


class InstanceNic(BaseModel):
    """One of an instance's ports as its node carries it."""

    port_id: str
    network_id: str
    mac_address: str
    ip_address: str | None
    bdf: str | None = Field(description="the PCI address on the host of the DPU function carrying the port; "
                                        "null until it is plugged")


class InstanceDisk(BaseModel):
    """One of an instance's volumes as its node serves it."""

    volume_id: str
    bootable: bool
    bdf: str | None = Field(description="the PCI address on the host of the storage function serving the volume; "
                                        "null until it is attached")


class InstancePublic(Public):
    id: str
    name: str
    project_id: str
    flavor_id: str | None
    image_id: str | None
    node_id: str | None
    node: str | None
    key_name: str | None
    status: str
    task_state: str | None
    fault: dict[str, Any] | None
    ports: list[str]
    volumes: list[str]
    nics: list[InstanceNic] = Field(description="its ports, with the BDF of the function carrying each")
    disks: list[InstanceDisk] = Field(description="its volumes, with the BDF of the function serving each")
    pci_requests: list[dict[str, Any]]
    vcpus: int
    ram: int
    numa_placement: NumaPlacement | None = Field(default=None, description="a VM's host cells and CPUs on "
                                                                           "its node; null for bare metal")
    flavor: str | None = Field(default=None, description="the name of its flavor (after a resize: the new one)")
    old_flavor: OldFlavor | None = Field(default=None, description="during a resize or a migration and until "
                                                                   "it is confirmed or reverted (RESIZE, "
                                                                   "VERIFY_RESIZE, REVERT_RESIZE, MIGRATING, "
                                                                   "VERIFY_MIGRATE, REVERT_MIGRATE): the flavor "
                                                                   "before it")
    source_node: str | None = Field(default=None, description="during a migration and until it is confirmed or "
                                                              "reverted: the node it left, whose claims it holds")
    created_at: datetime
    updated_at: datetime


class StepPublic(Public):
    index: int
    name: str
    status: Literal["pending", "running", "waiting", "done", "failed", "undone", "undo_failed"] = Field(
        description="waiting: it failed and is tried again (detail: attempts, last_error)")
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    detail: dict[str, Any]


class OperationPublic(Public):
    id: str
    project_id: str
    instance_id: str | None
    action: str
    status: Literal["pending", "running", "succeeded", "failed"]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepPublic]


# -- PCI ----------------------------------------------------------------------------
class PciDevicePublic(BaseModel):
    id: str
    node: str
    address: str
    vendor_id: str
    product_id: str
    dev_type: str
    parent_addr: str | None
    numa_node: int | None
    status: str
    removed: bool
    instance_id: str | None
    request_id: str | None
    card_serial_number: str
    vf_num: int | None
    pf_mac: str
    devname: str
    extra_info: dict[str, str]


class PciPoolPublic(BaseModel):
    node: str
    attrs: dict[str, str]
    numa_node: int | None
    dev_type: str
    remote_managed: bool
    count: int
    free: int
    used: int


class PciFlavorCreate(Strict):
    name: Name
    description: str = Field(default="", max_length=4096)


class SeedPciFlavorCreate(BaseModel):
    """The create body: `{"pci-flavor": {"name": ..., "description": ...}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    pci_flavor: PciFlavorCreate = Field(alias="pci-flavor")


class PciFlavorUpdate(BaseModel):
    """The update action: `{"action": "update", "pci-flavor": {"description": ..., KEY: VALUE, ...}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    action: Literal["update"]
    pci_flavor: dict[str, Any] = Field(alias="pci-flavor")


class PciFlavorPublic(BaseModel):
    id: str
    name: str
    description: str
    spec: dict[str, str]


# -- accelerators (the seed's /accelerators) ------------------------------------------------
class AcceleratorCreate(Strict):
    """The seed's POST body: a name, and a uuid if the caller chooses it."""

    name: Name
    uuid: UUID | None = None


class AcceleratorAttach(Strict):
    """The seed's attach body: the accelerator's name and uuid, as it is."""

    name: Name
    uuid: UUID | None = None


class AcceleratorPublic(Public):
    uuid: str = Field(validation_alias="id")
    name: str
    acc_specs: dict[str, Any] = Field(description="remote, num, device_type, acc_capability (the seed's)")
    node: str | None = Field(validation_alias="hostname",
                             description="the node whose agent discovered it; none for a registered one")
    family: str = Field(description="the driver that found it: pci, gpu, fpga, qat, nvme, dpu")
    address: str
    vendor_id: str
    product_id: str
    resource_class: str
    traits: list[str]
    state: str = Field(description="inactive, installing, available, uninstalling, updating, error, missing; "
                                   "registered for one with no node")
    fault: str | None
    project_id: str | None = Field(description="the project that holds it (attached it, or registered it)")
    attached: str | None = Field(description="host: attached to the host it is installed on")
    revision: int = Field(description="grows with every change of its specs (also its ETag)")


class AcceleratorList(BaseModel):
    accelerator: list[AcceleratorPublic]
