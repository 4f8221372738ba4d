"""Choosing devices for an instance's PCI requests on one node.

All requests are met together or not at all: one device never counts for
two requests, and a PF and one of its own VFs are never both taken (taking
either makes the other unclaimable). The choice is a small max-flow from
requests to devices, tried per NUMA grouping the policy allows:

* `required`  — every device on one NUMA node, and only devices that report one;
* `legacy`    — devices that report a NUMA node share one; devices without one may join;
* `preferred` — like legacy if possible, otherwise any devices.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from dpustack.pci.flavors import spec_matches

_MAX_FAMILY_CHOICES = 8  # PFs whose own VFs compete with them: 2**8 choices at most


class Device(Protocol):
    address: str
    parent_addr: str | None
    numa_node: int | None

    def prop(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Need:
    """`count` devices, each matching at least one of `specs`."""

    count: int
    specs: tuple[Mapping[str, str], ...]

    def accepts(self, device: Device) -> bool:
        return any(spec_matches(spec, device) for spec in self.specs)


def allocate(devices: Sequence[Device], needs: Sequence[Need], policy: str = "legacy") -> list[list[str]] | None:
    """Addresses chosen for each need (in order), or None if the node cannot meet them all."""
    if not needs:
        return []
    eligible = [d for d in sorted(devices, key=lambda d: d.address) if any(n.accepts(d) for n in needs)]
    for group in _numa_groups(eligible, policy):
        chosen = _solve(group, needs)
        if chosen is not None:
            return chosen
    return None


def _numa_groups(devices: list[Device], policy: str) -> list[list[Device]]:
    nodes = sorted({d.numa_node for d in devices if d.numa_node is not None},
                   key=lambda n: -sum(1 for d in devices if d.numa_node == n))
    if policy == "required":
        return [[d for d in devices if d.numa_node == n] for n in nodes]
    groups = [[d for d in devices if d.numa_node in (n, None)] for n in nodes]
    groups.append([d for d in devices if d.numa_node is None])
    if policy == "preferred":
        groups.append(devices)
    return groups


def _solve(devices: list[Device], needs: Sequence[Need]) -> list[list[str]] | None:
    """Try each way of settling PF-versus-own-VF conflicts, VFs first."""
    by_address = {d.address: d for d in devices}
    families = sorted({d.parent_addr for d in devices if d.parent_addr in by_address})
    options = (list(itertools.product((False, True), repeat=len(families)))
               if len(families) <= _MAX_FAMILY_CHOICES
               else [(False,) * len(families), (True,) * len(families)])
    options.sort(key=sum)  # prefer keeping PFs whole: take VFs first
    for use_pf in options:
        pf_taken = {pf for pf, on in zip(families, use_pf) if on}
        pf_dropped = set(families) - pf_taken
        allowed = [d for d in devices
                   if d.address not in pf_dropped and (d.parent_addr not in pf_taken)]
        chosen = _max_flow(allowed, needs)
        if chosen is not None:
            return chosen
    return None


def _max_flow(devices: list[Device], needs: Sequence[Need]) -> list[list[str]] | None:
    """Bipartite b-matching by augmenting paths: needs (capacity `count`) to devices (capacity 1)."""
    accepts = [[j for j, d in enumerate(devices) if need.accepts(d)] for need in needs]
    owner: list[int | None] = [None] * len(devices)
    for i, need in enumerate(needs):
        for _ in range(need.count):
            if not _augment(i, accepts, owner, needs):
                return None
    result: list[list[str]] = [[] for _ in needs]
    for j, i in enumerate(owner):
        if i is not None:
            result[i].append(devices[j].address)
    return result


def _augment(start: int, accepts: list[list[int]], owner: list[int | None], needs: Sequence[Need]) -> bool:
    """Give `start` one more device, shifting others' devices along an alternating path (BFS)."""
    came_from: dict[int, int] = {}   # device -> the need that reached it
    via: dict[int, int] = {}         # need -> the device it was reached through (it holds that device)
    queue = deque([start])
    while queue:
        need = queue.popleft()
        for device in accepts[need]:
            if device in came_from:
                continue
            came_from[device] = need
            holder = owner[device]
            if holder is None:
                _shift(device, start, came_from, via, owner)
                return True
            if holder != start and holder not in via:
                via[holder] = device
                queue.append(holder)
    return False


def _shift(device: int, start: int, came_from: dict[int, int], via: dict[int, int],
           owner: list[int | None]) -> None:
    """Walk the path back: each need on it takes the device that reached it and gives up its `via` one."""
    while True:
        need = came_from[device]
        owner[device] = need
        if need == start:
            return
        device = via[need]
