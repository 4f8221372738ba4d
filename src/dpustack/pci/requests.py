"""PCI requests: what devices an instance wants.

The flavor extra spec `pci_passthrough:pci_flavor` reads
`count:flavorA,flavorB;count:flavorC` — `count` devices, each from any of
the listed PCI flavors; requests are joined by `;`, a trailing `;` is
allowed, and a count of 1 may be omitted. A NIC asks the same way with
`--nic net-id=...,pci-flavor=1:phyX_NIC`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dpustack.errors import InvalidInput

EXTRA_SPEC = "pci_passthrough:pci_flavor"
NUMA_POLICY_SPEC = "hw:pci_numa_affinity_policy"
#: hw:pci_numa_affinity_policy, the one list of it (the NUMA fit and the PCI claim read it)
NUMA_POLICIES = ("required", "preferred", "legacy", "socket")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_COUNT = 64


@dataclass(frozen=True)
class FlavorRequest:
    """`count` devices, each matching one of the named PCI flavors."""

    count: int
    flavors: tuple[str, ...]


def parse_pci_flavor_spec(text: str, *, field: str = EXTRA_SPEC) -> list[FlavorRequest]:
    """Parse `count:flavorA,flavorB;...` (see the module docstring); raise InvalidInput naming `field` on anything else."""
    requests = []
    parts = [p.strip() for p in text.strip().split(";")]
    if parts and parts[-1] == "":
        parts.pop()
    if not parts:
        raise InvalidInput("no PCI request given", field=field)
    for part in parts:
        count_text, sep, names_text = part.rpartition(":")
        if not sep:
            count_text, names_text = "1", part
        count_text = count_text.strip() or "1"
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_COUNT:
            raise InvalidInput(f"'{part}': the count must be a number from 1 to {MAX_COUNT}", field=field)
        names = tuple(n.strip() for n in names_text.split(","))
        if not names or any(not _NAME.match(n) for n in names):
            raise InvalidInput(f"'{part}': expected COUNT:FLAVOR[,FLAVOR...]", field=field)
        requests.append(FlavorRequest(int(count_text), names))
    return requests


def format_request(request: FlavorRequest) -> str:
    return f"{request.count}:{','.join(request.flavors)}"


def numa_policy(extra_specs: dict[str, str]) -> str:
    """The flavor's PCI NUMA affinity policy (default legacy; case-insensitive); InvalidInput naming the key."""
    policy = str(extra_specs.get(NUMA_POLICY_SPEC, "legacy")).strip().lower()
    if policy not in NUMA_POLICIES:
        raise InvalidInput(f"must be one of {', '.join(NUMA_POLICIES)}", field=NUMA_POLICY_SPEC)
    return policy
