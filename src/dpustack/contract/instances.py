"""Instances on a node: the build request and its parts, NIC and volume bodies, power, the console,
and the answers, each carrying the step log of what the agent did (docs/api.md, "Agent API")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from dpustack.contract.fields import Identifier, PacketRate, Request
from dpustack.contract.numa import NumaPlacement
from dpustack.inputs import Name, UnicastMac
from dpustack.instance_states import AgentStatus, PowerState


# -- requests ----------------------------------------------------------------
class FlavorSpec(Request):
    name: Name
    vcpus: int = Field(ge=1)
    ram: int = Field(ge=1, description="MiB")
    disk: int = Field(0, ge=0, description="GiB")


class NicVf(Request):
    """The host VF the controller allocated to a VM's remote-managed NIC: passed through to the VM, and
    its representor on the node's DPU (found by the PF's MAC and the VF's number) plugged into the bridge."""

    address: str = Field(min_length=1, max_length=32, description="the VF's BDF on the host")
    pf_mac: UnicastMac
    vf_num: int = Field(ge=0, le=65535)


# A NIC to plug: in a build request, or the body of ``POST /v1/instances/{uuid}/nics``.
class NicRequest(Request):
    port_id: Identifier
    mac: UnicastMac
    network_id: str | None = None
    qos_pps: PacketRate = None
    vf: NicVf | None = Field(default=None, description="a VM's remote-managed NIC: its VF, instead of a new net "
                                                       "function; none on bare metal")


# A volume to attach: in a build request, or the body of ``POST /v1/instances/{uuid}/volumes``.
class VolumeRequest(Request):
    volume_id: Identifier
    uri: str = Field(min_length=1)
    bootable: bool = False


class PciAssignment(Request):
    """A host PCI device the controller allocated to the instance (for bare metal: already in the host)."""

    address: str = Field(min_length=1, max_length=32)
    request_id: str = Field(min_length=1, max_length=64)


# Build and run an instance: its volumes, then its NICs, then power on; all undone on a failure.
class BuildRequest(Request):
    """Build and run an instance: its flavor, image, NICs, volumes, PCI devices and a VM's NUMA placement."""

    uuid: Identifier
    name: Name
    image: str | None = None
    user_data: str | dict[str, Any] | None = None
    flavor: FlavorSpec
    networks: list[NicRequest] = []
    volumes: list[VolumeRequest] = []
    pci_devices: list[PciAssignment] = []
    numa_placement: NumaPlacement | None = Field(
        default=None, description="a VM's host cells and CPUs, as the controller's scheduler claimed them; "
                                  "none for bare metal")
    power: PowerState = Field(default="on", description="the power it is left in: `off` for an instance moved "
                                                        "here stopped (a cold migration of a SHUTOFF one)")
    bdfs: dict[str, str] = Field(default={}, description="the host address (BDF) of a function, by port or volume "
                                                         "id, where it was on this node before (a migration back): "
                                                         "it is put there again if that slot is free; the others "
                                                         "get a free slot")


# A VM's new flavor and the placement the controller claimed for it: the body of
# ``POST /v1/instances/{uuid}/resize`` (a revert sends the old ones back).
class ResizeRequest(Request):
    flavor: FlavorSpec
    numa_placement: NumaPlacement | None = None


class RebootRequest(Request):
    type: Literal["hard", "soft"]


# A user's new password, set in the running instance now: the body of ``POST /v1/instances/{uuid}/password``.
# The node keeps it nowhere; the controller's client sends the secret itself (a dump shows it masked).
class PasswordRequest(Request):
    user: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$", description="the guest's user, e.g. root")
    password: SecretStr = Field(min_length=1, max_length=255)


# -- answers -----------------------------------------------------------------
# What happened to one step of an agent action: ``done``, ``failed``, ``undone`` or ``undo_failed``.
class StepLog(BaseModel):
    name: str
    status: Literal["done", "failed", "undone", "undo_failed"]
    duration_ms: int
    error: str | None = None


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
    status: AgentStatus
    power_state: PowerState
    vcpus: int
    ram: int
    fault: str | None = None
    nics: list[NicOut]
    volumes: list[VolumeOut]
    pci_devices: list[PciAssignment] = []
    #: the guest slot (PCI root port) of each device of a VM, by alias (function id)
    slots: dict[str, int] = {}

    def nic(self, port_id: str) -> NicOut | None:
        """The plugged NIC of cloud port `port_id`, if there is one."""
        return next((nic for nic in self.nics if nic.port_id == port_id), None)


# The instance after an action, and the steps the action took.
class InstanceResult(BaseModel):
    instance: InstanceOut
    steps: list[StepLog]


# The steps an action took (deleting an instance: nothing is left to show).
class StepsResult(BaseModel):
    steps: list[StepLog]


# Where the instance's console is (the host BMC's, for bare metal).
class Console(BaseModel):
    type: str
    url: str
