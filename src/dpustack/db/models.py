"""SQLAlchemy models of the controller database.

Schema changes go through Alembic (`dpustack/db/migrations`); never
`create_all` in production code.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, TypeDecorator,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dpustack.instance_states import InstanceStatus


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone when storing)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    """An API token; only its SHA-256 hash is stored. An agent token is issued for one node."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True,
                                                default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    project: Mapped[Project] = relationship()


class Node(Base):
    """One server, named by the hostname its DPU agent reports."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    node_type: Mapped[str] = mapped_column(String(8))
    dpu_model: Mapped[str] = mapped_column(String(64), default="")
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the node is not ready: its agent's reason, or the controller's when the report's cells are no host's.
    not_ready_reason: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    agent_url: Mapped[str] = mapped_column(String(512), default="")
    total_cpu: Mapped[int] = mapped_column(Integer, default=0)
    used_cpu: Mapped[int] = mapped_column(Integer, default=0)
    total_mem: Mapped[int] = mapped_column(Integer, default=0)
    used_mem: Mapped[int] = mapped_column(Integer, default=0)
    reported_instances: Mapped[list[Any]] = mapped_column(default=list)
    claimed_cpu: Mapped[int] = mapped_column(Integer, default=0)
    claimed_mem: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    traits: Mapped[list[Any]] = mapped_column(default=list)
    pci_flavor_attrs: Mapped[list[Any]] = mapped_column(default=list)
    # A VM node's host cells as its agent last reported them (contract.numa.NumaCell); none on bare metal.
    numa_cells: Mapped[list[Any]] = mapped_column(default=list)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # None until the agent's first report: an enrolled node that never reported
    joined_at: Mapped[datetime | None] = mapped_column(default=None)
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)  # never scheduled while set
    # The credential the controller presents to this node's agent (Fernet token under the controller's
    # secret.key), and the one being rotated in until the agent has confirmed it.
    credential_encrypted: Mapped[str] = mapped_column(Text, default="")
    pending_credential_encrypted: Mapped[str | None] = mapped_column(Text, default=None)


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(8))
    extra_specs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    # queued (no data yet) -> saving (upload under way) -> active; deleting: flattening the volumes on it
    status: Mapped[str] = mapped_column(String(16), default="queued")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    checksum: Mapped[str] = mapped_column(String(64), default="")
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    # The format the owner claims; an upload is checked against it (qemu-img info).
    disk_format: Mapped[str] = mapped_column(String(16), default="raw")
    # Bytes of disk the image holds (a qcow2 file is smaller than its disk); 0 until uploaded.
    virtual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Network(Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    subnets: Mapped[list["Subnet"]] = relationship(order_by="Subnet.created_at", cascade="all, delete-orphan")


class Subnet(Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), default="")
    dns_nameservers: Mapped[list[str]] = mapped_column(JSON, default=list)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Port(Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_address", name="uq_ports_subnet_ip"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    subnet_id: Mapped[str | None] = mapped_column(ForeignKey("subnets.id"))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    mac_address: Mapped[str] = mapped_column(String(17), unique=True)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    binding_host_id: Mapped[str] = mapped_column(String(255), default="")
    binding_profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    vnic_type: Mapped[str] = mapped_column(String(32), default="normal")
    # For remote-managed ports: the DPU that must plug the representor (OVN requested-chassis).
    requested_chassis: Mapped[str] = mapped_column(String(255), default="")
    # Ports the controller made for an instance go away with it.
    auto_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    # Port QoS: limits on what the instance sends through this port (none: unlimited).
    qos_bps: Mapped[int | None] = mapped_column(BigInteger)
    qos_pps: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Ports made before security groups existed have none: the backend leaves them unfiltered.
    security_groups: Mapped[list["SecurityGroup"]] = relationship(secondary="port_security_groups",
                                                                  order_by="SecurityGroup.created_at")


class Volume(Base):
    """A block volume; its data is kept by the controller's volume backend (statuses: volume_states)."""

    __tablename__ = "volumes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="available")
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The image or snapshot whose data the volume shares (copy-on-write); none once flattened.
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    snapshot_id: Mapped[str | None] = mapped_column(
        ForeignKey("volume_snapshots.id", name="fk_volumes_snapshot_id", use_alter=True), index=True)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), index=True)
    # The attachment to the instance: the backend serves it under `attachment_id` (its export's name);
    # the node, storage function and host BDF are what the node's agent answered.
    attachment_id: Mapped[str | None] = mapped_column(String(36))
    attached_node: Mapped[str | None] = mapped_column(String(255))
    function_id: Mapped[str | None] = mapped_column(String(255))
    bdf: Mapped[str | None] = mapped_column(String(32))
    # While its instance moves to another node (a migration or its revert, the source stopped): the
    # attachment on the node it moves to ({attachment_id, node, function_id, bdf}), beside the one above
    # until the source lets go. None otherwise: a volume is attached on one node at a time.
    move_attachment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The operation changing the volume now; another change waits for it to end (409).
    operation_id: Mapped[str | None] = mapped_column(
        ForeignKey("operations.id", name="fk_volumes_operation_id", ondelete="SET NULL"))
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    # Boot volumes made from an image go away with their instance.
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    instance: Mapped[Instance | None] = relationship()


class VolumeSnapshot(Base):
    """A point-in-time copy of a volume, kept by the volume backend: a source for new volumes."""

    __tablename__ = "volume_snapshots"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    size: Mapped[int] = mapped_column(Integer)  # GiB: the volume's size when the snapshot was taken
    status: Mapped[str] = mapped_column(String(16), default="creating")
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Taken of an attached volume: the instance using it and its node, at that time.
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"))
    node: Mapped[str | None] = mapped_column(String(255))
    operation_id: Mapped[str | None] = mapped_column(ForeignKey("operations.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    flavor_id: Mapped[str | None] = mapped_column(ForeignKey("flavors.id", ondelete="SET NULL"))
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=InstanceStatus.BUILDING)
    task_state: Mapped[str | None] = mapped_column(String(32))
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    user_data: Mapped[str] = mapped_column(Text, default="")
    # The key pair named at create time, copied: the metadata keeps it if the key pair is deleted.
    key_name: Mapped[str | None] = mapped_column(String(255))
    key_data: Mapped[str | None] = mapped_column(Text)
    admin_pass_encrypted: Mapped[str | None] = mapped_column(Text)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram: Mapped[int] = mapped_column(Integer)
    # A VM's host cells and CPUs on its node (contract.numa.NumaPlacement), claimed with its CPU and RAM.
    numa_placement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A resize under way or waiting for confirm or revert, as Nova's migration context: what the instance had
    # before it (flavor_id, flavor_name, vcpus, ram, disk, numa_placement: claims held until the confirm) and
    # the status to go back to; the columns above hold the new flavor's. None: no resize.
    resize_from: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    node: Mapped[Node | None] = relationship()
    flavor: Mapped[Flavor | None] = relationship()


class Operation(Base):
    """A long action, run by the orchestrator as ordered steps."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    steps: Mapped[list["OperationStep"]] = relationship(order_by="OperationStep.index",
                                                        cascade="all, delete-orphan")


class OperationStep(Base):
    __tablename__ = "operation_steps"
    __table_args__ = (UniqueConstraint("operation_id", "index", name="uq_steps_operation_index"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class Dpu(Base):
    """A DPU card as its agent reports it: the card serial number names the DPU host."""

    __tablename__ = "dpus"
    card_serial_number: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PciDeviceRow(Base):
    """A PCI device a node offers (after its device filters), and who has it."""

    __tablename__ = "pci_devices"
    __table_args__ = (UniqueConstraint("node_id", "address", name="uq_pci_devices_node_address"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(32))
    vendor_id: Mapped[str] = mapped_column(String(8))
    product_id: Mapped[str] = mapped_column(String(8))
    dev_type: Mapped[str] = mapped_column(String(16))
    parent_addr: Mapped[str | None] = mapped_column(String(32))
    numa_node: Mapped[int | None] = mapped_column(Integer)
    # available | allocated | unavailable (its PF or one of its VFs is allocated)
    status: Mapped[str] = mapped_column(String(16), default="available", index=True)
    # still allocated, but no longer offered by the node's configuration
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"), index=True)
    request_id: Mapped[str | None] = mapped_column(ForeignKey("pci_requests.id", ondelete="SET NULL"), index=True)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the full PciDevice as reported
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PciFlavor(Base):
    """A named PCI device selector: property -> simplified regular expression."""

    __tablename__ = "pci_flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PciRequest(Base):
    """`count` devices from any of `flavors`, for an instance (from its flavor or one of its NICs)."""

    __tablename__ = "pci_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    count: Mapped[int] = mapped_column(Integer)
    flavors: Mapped[list[Any]] = mapped_column(default=list)
    specs: Mapped[list[Any]] = mapped_column(default=list)   # the flavors' specs when the instance was created
    source: Mapped[str] = mapped_column(String(16))          # "flavor" | "nic"
    nic_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SecurityGroup(Base):
    """A named set of allow rules for ports (Neutron semantics); each project has a `default` one."""

    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_security_groups_project_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rules: Mapped[list["SecurityGroupRule"]] = relationship(
        order_by="SecurityGroupRule.created_at", cascade="all, delete-orphan",
        foreign_keys="SecurityGroupRule.security_group_id", back_populates="security_group")


class SecurityGroupRule(Base):
    """One allow rule: a direction, a protocol and ports, and where the traffic may come from or go to."""

    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id", ondelete="CASCADE"),
                                                   index=True)
    direction: Mapped[str] = mapped_column(String(8))           # ingress | egress
    ethertype: Mapped[str] = mapped_column(String(4))           # IPv4 | IPv6
    protocol: Mapped[str | None] = mapped_column(String(8))     # tcp | udp | icmp | None (any)
    port_range_min: Mapped[int | None] = mapped_column(Integer)
    port_range_max: Mapped[int | None] = mapped_column(Integer)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64))
    # Members of this group (its ports' addresses); rules naming a group go away with it, as in Neutron.
    remote_group_id: Mapped[str | None] = mapped_column(ForeignKey("security_groups.id", ondelete="CASCADE"),
                                                        index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    security_group: Mapped[SecurityGroup] = relationship(foreign_keys=[security_group_id],
                                                         back_populates="rules")


class PortSecurityGroup(Base):
    """Which security groups a port is in; a group in use cannot be deleted."""

    __tablename__ = "port_security_groups"
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id"), primary_key=True,
                                                   index=True)


class KeyPair(Base):
    """An SSH public key of a project, handed to instances through the metadata service."""

    __tablename__ = "keypairs"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_keypairs_project_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Accelerator(Base):
    """An accelerator: one a node's agent discovered (``node_id``, ``key``: the agent's name for it, the rest
    as last reported) or one registered through the API (no node). ``project_id`` is the project that holds it:
    its registrant, or the one it is attached to (``attached``: ``host``). ``revision`` grows with every change
    of its specs: an update names the revision it read, so of two concurrent updates one wins."""

    __tablename__ = "accelerators"
    __table_args__ = (UniqueConstraint("node_id", "key", name="uq_accelerators_node_key"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    key: Mapped[str | None] = mapped_column(String(128))
    family: Mapped[str] = mapped_column(String(16), default="")
    address: Mapped[str] = mapped_column(String(32), default="")
    vendor_id: Mapped[str] = mapped_column(String(4), default="")
    product_id: Mapped[str] = mapped_column(String(4), default="")
    numa_node: Mapped[int | None] = mapped_column(Integer)
    acc_specs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resource_class: Mapped[str] = mapped_column(String(64), default="")
    traits: Mapped[list[Any]] = mapped_column(default=list)
    # on its node (contract.accelerators.AcceleratorState), or "registered" for one with no node
    state: Mapped[str] = mapped_column(String(16), default="inactive")
    fault: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), index=True)
    attached: Mapped[str | None] = mapped_column(String(16))  # "host", or None
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    node: Mapped[Node | None] = relationship()

    @property
    def hostname(self) -> str | None:
        """Its node's hostname; None for a registered accelerator."""
        return self.node.hostname if self.node is not None else None
