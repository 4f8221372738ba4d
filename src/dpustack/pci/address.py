"""PCI addresses: ``domain:bus:slot.function``, with domains wider than 16 bits kept as they are.

Linux names most functions ``0000:05:00.3``, but Intel VMD and some
hypervisors create domains above 0xffff (``10000:e1:00.0``); those are valid
addresses and must not be dropped or truncated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dpustack.errors import InvalidInput

_ADDRESS = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")
MAX_SLOT = 0x1F


@dataclass(frozen=True, order=True)
class PciAddress:
    """One PCI function; orders numerically (domain, bus, slot, function)."""

    domain: int
    bus: int
    slot: int
    function: int

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"

    @property
    def routing_id(self) -> int:
        """The 16-bit requester id (bus, device, function) used for SR-IOV VF offsets."""
        return (self.bus << 8) | (self.slot << 3) | self.function

    @classmethod
    def from_routing_id(cls, domain: int, routing_id: int) -> "PciAddress":
        """The address of a routing id in ``domain`` (how a VF's address follows from offset and stride)."""
        if not 0 <= routing_id <= 0xFFFF:
            raise InvalidInput(f"routing id {routing_id:#x} is outside 16 bits", field="routing_id")
        return cls(domain, routing_id >> 8, (routing_id >> 3) & 0x1F, routing_id & 0x7)


def parse_address(text: str, *, field: str = "address") -> PciAddress:
    """Parse ``[domain:]bus:slot.function`` (hex, any case; the domain defaults to 0)."""
    match = _ADDRESS.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"{field}: {text!r} is not a PCI address (expected dddd:bb:ss.f)", field=field)
    domain, bus, slot, function = (int(part, 16) if part else 0 for part in match.groups())
    if slot > MAX_SLOT:
        raise InvalidInput(f"{field}: slot {slot:#x} of {text!r} is above {MAX_SLOT:#x}", field=field)
    return PciAddress(domain, bus, slot, function)


def canonical_address(text: str, *, field: str = "address") -> str:
    """``text`` in the canonical lower-case form, e.g. ``"5:0.3"`` -> ``"0000:05:00.3"``."""
    return str(parse_address(text, field=field))

