"""FunctionDriver: the DPU's snic controller, which hot-plugs PCIe functions into the host.

A function is a PF or VF the host sees at a PCI address (BDF); on the DPU
side it has a representor netdev. The host BDF and the representor name are
derived from the function's *slot*, a small integer the agent allocates once
per function and keeps, so a function re-created after a SoC reboot comes
back at the same BDF with the same representor. Each slot is one hot-plug
port of the DPU's PCIe switch, behind which the function is device 0 of its
own bus, as hot-plugged emulated functions of a BlueField appear.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal

from dpustack.drivers.base import Driver
from dpustack.errors import DriverError, InvalidInput
from dpustack.pci.address import parse_address

FunctionType = Literal["PF", "VF"]
FunctionKind = Literal["net", "storage"]

#: the bus of the DPU's hot-plug ports; the function in slot n is on bus FIRST_BUS + 1 + n
FIRST_BUS = 0x40
MAX_SLOT = 0xFF - FIRST_BUS - 1


@dataclass(frozen=True)
class FunctionSpec:
    """What the agent asks for."""

    id: str
    slot: int
    type: FunctionType = "PF"
    kind: FunctionKind = "net"
    mac: str | None = None
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Function:
    """A function as the snic controller reports it."""

    id: str
    slot: int
    type: FunctionType
    kind: FunctionKind
    mac: str | None
    bdf: str
    representor: str
    features: tuple[str, ...] = field(default=())

    def matches(self, spec: FunctionSpec) -> bool:
        """True when this function is what ``spec`` asks for."""
        return (self.slot, self.type, self.kind, self.mac, tuple(self.features)) == (
            spec.slot, spec.type, spec.kind, spec.mac, tuple(spec.features))


def host_bdf(slot: int) -> str:
    """The host PCI address of the function in ``slot``: device 0 of the bus behind the slot's port."""
    if not 0 <= slot <= MAX_SLOT:
        raise DriverError(f"function slot {slot} is outside 0..{MAX_SLOT}")
    return f"0000:{FIRST_BUS + 1 + slot:02x}:00.0"


def slot_of(bdf: str) -> int | None:
    """The slot of the function at host address ``bdf`` (:func:`host_bdf`'s inverse); None if no slot is there."""
    try:
        address = parse_address(bdf, field="bdf")
    except InvalidInput:
        return None
    slot = address.bus - FIRST_BUS - 1
    in_slot = (address.domain, address.slot, address.function) == (0, 0, 0) and 0 <= slot <= MAX_SLOT
    return slot if in_slot else None


def representor_name(slot: int, type_: FunctionType, kind: FunctionKind) -> str:
    """BlueField-style representor names: ``pf3hpf`` (net PF), ``pf0vf3`` (net VF), ``snap3`` (storage)."""
    if kind == "storage":
        return f"snap{slot}"
    return f"pf{slot}hpf" if type_ == "PF" else f"pf0vf{slot}"


class FunctionDriver(Driver):
    """Create, inspect and remove host-visible PCIe functions."""

    interface = "functions"

    @abc.abstractmethod
    def create(self, spec: FunctionSpec, *, may_exist: bool = True) -> Function:
        """Create the function; if it exists and matches ``spec``, return it (unless not ``may_exist``)."""

    @abc.abstractmethod
    def get(self, function_id: str) -> Function | None:
        """The function, or None when it does not exist."""

    @abc.abstractmethod
    def delete(self, function_id: str, *, if_exists: bool = True) -> None:
        """Remove the function; a missing one is fine when ``if_exists``."""

    @abc.abstractmethod
    def list(self) -> list[Function]:
        """Every function the snic controller has, ours or not."""
