"""Choosing devices for an instance's PCI requests on one node.

All requests are met together or not at all: one device never counts for
two requests, and a PF and one of its own VFs are never both taken (taking
either makes the other unclaimable). A request takes a PF only if its
`dev_type` asks for one, and a remote-managed VF only if it names
`remote_managed` (:func:`dpustack.pci.flavors.request_accepts`).

The choice is exact: a max-flow from requests to devices, where a PF and its
own VFs may at first both be used; each such clash is settled by searching
both ways (the family keeps its VFs, or gives its PF), and a branch whose
max-flow already fails is dropped. Families that the requests cannot tell
apart are interchangeable, so only one order of them is searched. Devices
that are not PFs are tried first, keeping PFs whole. This is tried per NUMA
grouping the policy allows:

* `required`  — every device on one NUMA node, and only devices that report one;
* `legacy`    — devices that report a NUMA node share one; devices without one may join;
* `preferred` — like legacy if possible, otherwise any devices;
* `socket`    — like legacy (devices that share a NUMA node share its socket, the one thing known here without
  the node's sockets).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from dpustack.pci.flavors import request_accepts


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
        return any(request_accepts(spec, device) for spec in self.specs)


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
    """An exact choice for `needs` from `devices` (all or nothing), never a PF together with its own VF."""
    by_address = {d.address: d for d in devices}
    vfs_of: dict[str, list[str]] = defaultdict(list)
    for device in devices:
        if device.parent_addr in by_address:
            vfs_of[device.parent_addr].append(device.address)
    takers = {d.address: tuple(need.accepts(d) for need in needs) for d in devices}
    groups: dict[tuple, list[str]] = defaultdict(list)   # families the needs cannot tell apart
    group_of: dict[str, list[str]] = {}
    for pf in sorted(vfs_of):
        group = groups[(takers[pf], tuple(sorted(takers[vf] for vf in vfs_of[pf])))]
        group.append(pf)
        group_of[pf] = group
    ordered = sorted(devices, key=lambda d: (d.address in vfs_of, d.address))  # PFs last: VFs are taken first

    def search(no_pf: frozenset[str], no_vfs: frozenset[str]) -> list[list[str]] | None:
        allowed = [d for d in ordered if d.address not in no_pf and d.parent_addr not in no_vfs]
        chosen = _max_flow(allowed, needs)
        if chosen is None:
            return None  # even with the clashes allowed it fails: so does every branch below
        taken = {address for addresses in chosen for address in addresses}
        clash = next((pf for pf in group_of if pf in taken and any(vf in taken for vf in vfs_of[pf])), None)
        if clash is None:
            return chosen
        # Any answer can be reordered within a group so that the families giving their PF come first;
        # so either this family keeps its VFs and so do the ones after it, or it and those before it give the PF.
        group = group_of[clash]
        index = group.index(clash)
        return (search(no_pf | frozenset(group[index:]), no_vfs)
                or search(no_pf, no_vfs | frozenset(group[:index + 1])))

    return search(frozenset(), frozenset())


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
