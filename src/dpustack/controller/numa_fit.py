"""Fitting a VM's vCPUs and memory into its host's NUMA cells, from Nova's flavor vocabulary (pure, no I/O).

:func:`numa_request` reads a flavor's vcpus, ram (MiB) and extra specs; :func:`fit` places the request in
the host's cells beside the placements already claimed there, or raises :class:`DoesNotFit` saying why.
Dedicated vCPUs are pinned only to a cell's dedicated CPUs (all its CPUs if it has no split), never twice
and never to a CPU a shared claim floats over; shared vCPUs count against its shared CPUs; small-page memory
is the cell's memory minus its huge page pools, huge-page memory its free pages of the size; the search is
exact and deterministic. The rules are in docs/vm.md ("NUMA
placement"). Over-commit (CPU or memory allocation ratios) is not in scope.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from dpustack.contract.numa import CellPlacement, NumaCell, NumaPlacement
from dpustack.errors import Conflict, InvalidInput
from dpustack.pci.requests import NUMA_POLICIES, NUMA_POLICY_SPEC

CPU_POLICY_SPEC, NODES_SPEC, PAGE_SIZE_SPEC = "hw:cpu_policy", "hw:numa_nodes", "hw:mem_page_size"
CPUS_SPEC, MEM_SPEC = "hw:numa_cpus.", "hw:numa_mem."
CPU_POLICIES = ("shared", "dedicated")
PAGE_SIZES = ("small", "large", "any")
MAX_NUMA_NODES = 64
SMALL_PAGE_KIB = 4
_SIZE = re.compile(r"^(\d+)\s*(?:([kmg])(?:i?b)?)?$", re.IGNORECASE)
_UNIT_KIB = {None: 1, "k": 1, "m": 1024, "g": 1024 * 1024}


class InvalidExtraSpec(InvalidInput):
    """A flavor's extra spec (named by `field`) has a value this module does not accept."""


class DoesNotFit(Conflict):
    """The host's cells cannot hold the request beside its claims; the message says why."""


@dataclass(frozen=True)
class GuestCell:
    """One guest NUMA cell: its vCPU numbers and memory."""

    vcpus: tuple[int, ...]
    memory_mib: int


@dataclass(frozen=True)
class NumaRequest:
    """What a flavor asks of a host's NUMA cells."""

    vcpus: int
    ram: int
    dedicated: bool
    cells: tuple[GuestCell, ...]
    page_size: str | int = "small"   # small | large | any | a huge page size in KiB
    pci_policy: str = "legacy"
    numa_nodes: int | None = None    # hw:numa_nodes if given


def _bad(key: str, value: Any, allowed: str) -> InvalidExtraSpec:
    return InvalidExtraSpec(f"{key}: {value!r} is not allowed; expected {allowed}", field=key)


def _choice(specs: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(specs.get(key, default)).strip().lower()
    if value not in allowed:
        raise _bad(key, specs[key], " or ".join(allowed))
    return value


def _page_size(text: Any) -> str | int:
    value = str(text).strip().lower()
    if value in PAGE_SIZES:
        return value
    match = _SIZE.match(value)
    size = int(match.group(1)) * _UNIT_KIB[match.group(2) and match.group(2).lower()] if match else 0
    if size < SMALL_PAGE_KIB or size & (size - 1) or size > 2**31 - 1:
        raise _bad(PAGE_SIZE_SPEC, text, "small, large, any, or a power-of-two page size in KiB "
                                         "(2048) or with a unit (2MB, 1GB)")
    return "small" if size == SMALL_PAGE_KIB else size


def _cpu_list(key: str, text: Any, vcpus: int) -> tuple[int, ...]:
    """`0-3,^2,5` -> (0, 1, 3, 5), each below `vcpus`."""
    included: set[int] = set()
    excluded: set[int] = set()
    allowed = f"a list of vCPU numbers below {vcpus} like 0-3,^2,5"
    for part in str(text).replace(" ", "").split(","):
        exclude, part = part.startswith("^"), part.removeprefix("^")
        low, sep, high = part.partition("-")
        high = high if sep else low
        if not (low.isdigit() and high.isdigit()) or int(low) > int(high) or int(high) >= vcpus:
            raise _bad(key, text, allowed)
        (excluded if exclude else included).update(range(int(low), int(high) + 1))
    if not included - excluded:
        raise _bad(key, text, allowed)
    return tuple(sorted(included - excluded))


def _guest_cells(specs: Mapping[str, Any], vcpus: int, ram: int, nodes: int | None) -> tuple[GuestCell, ...]:
    explicit = sorted(k for k in specs if k.startswith((CPUS_SPEC, MEM_SPEC)))
    if nodes is None:
        if explicit:
            raise InvalidExtraSpec(f"{explicit[0]} needs {NODES_SPEC}", field=explicit[0])
        return (GuestCell(tuple(range(vcpus)), ram),)
    if not explicit:
        if vcpus % nodes or ram % nodes:
            raise InvalidExtraSpec(f"{NODES_SPEC}: {nodes} cells do not divide {vcpus} vCPUs and {ram} MiB "
                                   f"evenly; give {CPUS_SPEC}N and {MEM_SPEC}N", field=NODES_SPEC)
        per = vcpus // nodes
        return tuple(GuestCell(tuple(range(i * per, (i + 1) * per)), ram // nodes) for i in range(nodes))
    for key in explicit:
        if key.rpartition(".")[2] not in {str(i) for i in range(nodes)}:
            raise _bad(key, key, f"{CPUS_SPEC}N and {MEM_SPEC}N for N from 0 to {nodes - 1}")
    for key in [f"{prefix}{i}" for prefix in (CPUS_SPEC, MEM_SPEC) for i in range(nodes)]:
        if key not in specs:
            raise InvalidExtraSpec(f"{key} is missing: {CPUS_SPEC}N and {MEM_SPEC}N go together, "
                                   f"one of each for every cell", field=key)
    cpus = [_cpu_list(f"{CPUS_SPEC}{i}", specs[f"{CPUS_SPEC}{i}"], vcpus) for i in range(nodes)]
    mems = []
    for i in range(nodes):
        text = str(specs[f"{MEM_SPEC}{i}"]).strip()
        if not text.isdigit() or int(text) < 1:
            raise _bad(f"{MEM_SPEC}{i}", specs[f"{MEM_SPEC}{i}"], "a memory size in MiB of at least 1")
        mems.append(int(text))
    if sorted(c for cell in cpus for c in cell) != list(range(vcpus)):
        raise InvalidExtraSpec(f"{CPUS_SPEC}N: every vCPU 0..{vcpus - 1} must be in exactly one cell",
                               field=f"{CPUS_SPEC}0")
    if sum(mems) != ram:
        raise InvalidExtraSpec(f"{MEM_SPEC}N: the cells' memory adds up to {sum(mems)} MiB, "
                               f"not the flavor's {ram}", field=f"{MEM_SPEC}0")
    return tuple(GuestCell(c, m) for c, m in zip(cpus, mems))


def is_numa_spec(key: str) -> bool:
    """Whether `numa_request` reads the extra spec `key`."""
    return (key in (CPU_POLICY_SPEC, NODES_SPEC, PAGE_SIZE_SPEC, NUMA_POLICY_SPEC)
            or key.startswith((CPUS_SPEC, MEM_SPEC)))


def numa_request(vcpus: int, ram: int, extra_specs: Mapping[str, Any]) -> NumaRequest:
    """The NUMA request of a flavor; InvalidExtraSpec naming the key for a value out of the vocabulary."""
    if vcpus < 1 or ram < 1:
        raise InvalidInput("a flavor needs at least 1 vCPU and 1 MiB", field="vcpus" if vcpus < 1 else "ram")
    nodes = None
    if NODES_SPEC in extra_specs:
        text = str(extra_specs[NODES_SPEC]).strip()
        nodes = int(text) if text.isdigit() else 0
        if not 1 <= nodes <= min(MAX_NUMA_NODES, vcpus):
            raise _bad(NODES_SPEC, extra_specs[NODES_SPEC],
                       f"a whole number from 1 to {min(MAX_NUMA_NODES, vcpus)} (at most one cell per vCPU)")
    return NumaRequest(vcpus=vcpus, ram=ram,
                       dedicated=_choice(extra_specs, CPU_POLICY_SPEC, CPU_POLICIES, "shared") == "dedicated",
                       cells=_guest_cells(extra_specs, vcpus, ram, nodes),
                       page_size=_page_size(extra_specs.get(PAGE_SIZE_SPEC, "small")),
                       pci_policy=_choice(extra_specs, NUMA_POLICY_SPEC, NUMA_POLICIES, "legacy"),
                       numa_nodes=nodes)


@dataclass
class _Free:
    """What one host cell has left beside the claims."""

    pinnable: list[int]   # the CPUs a dedicated vCPU may be pinned to now, lowest first
    shared: list[int]     # the CPUs shared vCPUs float over now
    room: int             # shared vCPUs it can still take: len(shared) minus the shared vCPUs placed here
    split: bool           # the cell has dedicated_cpus: dedicated and shared vCPUs use CPUs of their own
    memory: int           # small-page memory left
    pages: dict[int, int]


def _free_cells(cells: list[NumaCell], claims: Iterable[NumaPlacement]) -> dict[int, _Free]:
    claims = list(claims)
    pinned = {cpu for c in claims if c.pinned for part in c.cells for cpu in part.host_cpus}
    free = {}
    for cell in cells:
        taken = set(cell.pinned_cpus) | pinned
        parts = [(claim, part) for claim in claims for part in claim.cells if part.host_cell == cell.id]
        floating = [part for claim, part in parts if not claim.pinned]
        shared = sorted(set(cell.shared_cpus) - taken)
        if cell.dedicated_cpus is not None:
            pinnable = sorted(set(cell.dedicated_cpus) - taken)
        else:  # no split: never pin a CPU that a shared claim floats over
            pinnable = sorted(set(cell.cpus) - taken - {cpu for part in floating for cpu in part.host_cpus})
        pages = {hp.size_kib: hp.free for hp in cell.hugepages}
        small = cell.memory_mib - cell.hugepage_mib - cell.used_memory_mib
        for claim, part in parts:
            if size := claim.page_size_kib:
                pages[size] = pages.get(size, 0) - part.memory_mib * 1024 // size
            else:
                small -= part.memory_mib
        free[cell.id] = _Free(pinnable, shared, len(shared) - sum(len(part.vcpus) for part in floating),
                              cell.dedicated_cpus is not None, small, pages)
    return free


def shared_cpus(cell: NumaCell, claims: Iterable[NumaPlacement]) -> list[int]:
    """The cell's CPUs its shared vCPUs float over now: its shared CPUs no domain and no claim pins."""
    return _free_cells([cell], claims)[cell.id].shared


@dataclass(frozen=True)
class CellFree:
    """What one host cell has left for new instances beside the claims (never below 0)."""

    id: int
    cpus: int                    # shared vCPUs it can still take (its shared CPUs' room)
    pinnable_cpus: list[int]     # the CPUs a dedicated vCPU can be pinned to now, lowest first
    memory_mib: int              # small-page memory: its memory minus its huge page pools, used and claimed
    hugepages: dict[int, int]    # huge page size (KiB) -> free pages


def free_in_cells(cells: list[NumaCell], claims: Iterable[NumaPlacement]) -> list[CellFree]:
    """Each cell's free figures, by cell id, as `fit` counts them (docs/vm.md, "Rules")."""
    free = _free_cells(cells, claims)
    return [CellFree(id=cell.id, cpus=max(free[cell.id].room, 0), pinnable_cpus=_pinnable(free[cell.id]),
                     memory_mib=max(free[cell.id].memory, 0),
                     hugepages={size: max(n, 0) for size, n in sorted(free[cell.id].pages.items())
                                if size > SMALL_PAGE_KIB})
            for cell in sorted(cells, key=lambda c: c.id)]


def _pinnable(free: _Free) -> list[int]:
    """The CPUs a dedicated vCPU can take now; without a split, pinning one also takes one of the shared
    room, so no more than that room."""
    return free.pinnable if free.split else free.pinnable[:max(free.room, 0)]


def _fits(need: GuestCell, free: _Free, size: int | None, dedicated: bool) -> bool:
    if len(_pinnable(free) if dedicated else range(max(free.room, 0))) < len(need.vcpus):
        return False
    kib = need.memory_mib * 1024
    if size is None:
        return free.memory >= need.memory_mib
    return kib % size == 0 and free.pages.get(size, 0) >= kib // size


def affinity_units(policy: str, device_cells: set[int], sockets: Mapping[int, int] | None,
                   order: list[int]) -> list[list[int]] | None:
    """The groups of host cells (in `order`) of which the instance must get one cell each, so that every
    device cell is one of its cells (required, legacy) or shares a socket with one (socket); None if that
    cannot be known (socket without the cells' sockets). `preferred` asks nothing."""
    if policy == "preferred" or not device_cells:
        return []
    if policy == "socket":
        if sockets is None or any(d not in sockets for d in device_cells):
            return None
        return [[c for c in order if sockets.get(c) == s] for s in sorted({sockets[d] for d in device_cells})]
    return [[d] if d in order else [] for d in sorted(device_cells)]


def affine_cells(policy: str, candidates: list[int], device_cells: set[int],
                 sockets: Mapping[int, int] | None = None) -> list[int]:
    """The candidate cells a one-cell instance may take under `policy`, devices' cells first (else in the
    given order): required/legacy keep the one cell holding every device, socket the cells on the one socket
    of every device, preferred keeps them all."""
    order = sorted(candidates, key=lambda c: c not in device_cells)
    units = affinity_units(policy, device_cells, sockets, order)
    return [] if units is None else [c for c in order if all(c in unit for unit in units)]


def _match(needs: tuple[GuestCell, ...], order: list[int], units: list[list[int]],
           fits: Callable[[int, int], bool]) -> dict[int, int] | None:
    """Guest cell -> distinct host cell, every one fitting, one host cell from each unit; None if impossible.
    Units are matched to guest cells first; augmenting paths then add the rest and never unmatch a cell."""
    unit_of: dict[int, int] = {}

    def via(u: int, g: int) -> int | None:
        return next((c for c in units[u] if fits(g, c)), None)

    def give_unit(u: int, seen: set[int]) -> bool:
        takers = [g for g in range(len(needs)) if g not in seen and via(u, g) is not None]
        seen.update(takers)
        for g in sorted(takers, key=lambda g: g in unit_of):   # a free guest cell first, else move one along
            if g not in unit_of or give_unit(unit_of[g], seen):
                unit_of[g] = u
                return True
        return False

    if not all(give_unit(u, set()) for u in range(len(units))):
        return None
    cell_of = {g: via(u, g) for g, u in unit_of.items()}
    guest_of = {c: g for g, c in cell_of.items()}

    def give_cell(g: int, seen: set[int]) -> bool:
        takers = [c for c in order if c not in seen and fits(g, c)]
        seen.update(takers)
        for c in sorted(takers, key=lambda c: c in guest_of):  # the first free cell in order, else move one along
            if c not in guest_of or give_cell(guest_of[c], seen):
                guest_of[c], cell_of[g] = g, c
                return True
        return False

    if not all(g in cell_of or give_cell(g, set()) for g in range(len(needs))):
        return None
    return cell_of  # type: ignore[return-value]


def _page_candidates(request: NumaRequest, cells: list[NumaCell]) -> list[int | None]:
    sizes = sorted({hp.size_kib for c in cells for hp in c.hugepages if hp.size_kib > SMALL_PAGE_KIB},
                   reverse=True)
    if request.page_size == "small":
        return [None]
    if request.page_size == "large":
        return list(sizes)
    return [*sizes, None] if request.page_size == "any" else [int(request.page_size)]


def fit(request: NumaRequest, cells: list[NumaCell], claims: Iterable[NumaPlacement] = (),
        device_cells: AbstractSet[int] = frozenset(), sockets: Mapping[int, int] | None = None) -> NumaPlacement:
    """Place `request` in `cells` beside `claims` (placements the cells' figures do not show yet), its PCI
    devices being on `device_cells` (and the cells on `sockets`, cell id -> socket id, for the socket
    policy); DoesNotFit with the reason if it cannot be."""
    if len({c.id for c in cells}) != len(cells):
        raise ValueError("cells: a cell id is listed twice")
    free = _free_cells(cells, claims)
    order = sorted(free, key=lambda c: (c not in device_cells, -free[c].memory, c))
    units = affinity_units(request.pci_policy, set(device_cells), sockets, order)
    if units is None:
        raise DoesNotFit(f"{NUMA_POLICY_SPEC}=socket: the host does not say which socket each cell is on")
    attempts = [units]
    if request.pci_policy == "preferred" and device_cells:  # the devices' cells if they fit, else any
        attempts = [affinity_units("required", set(device_cells), sockets, order), []]
    for size in _page_candidates(request, cells):
        for attempt in attempts:
            chosen = _match(request.cells, order, attempt, lambda g, c: _fits(request.cells[g], free[c], size,
                                                                          request.dedicated))
            if chosen is not None:
                return _placement(request, chosen, free, size)
    raise DoesNotFit(_reason(request, cells, free, bool(units), device_cells))


def _placement(request: NumaRequest, chosen: dict[int, int], free: dict[int, _Free],
               size: int | None) -> NumaPlacement:
    parts = []
    for g, need in enumerate(request.cells):
        cell = free[chosen[g]]
        parts.append(CellPlacement(guest_cell=g, host_cell=chosen[g], vcpus=list(need.vcpus),
                                   memory_mib=need.memory_mib,
                                   host_cpus=cell.pinnable[:len(need.vcpus)] if request.dedicated else cell.shared))
    return NumaPlacement(cells=parts, pinned=request.dedicated, page_size_kib=size)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _reason(request: NumaRequest, cells: list[NumaCell], free: dict[int, _Free], affine: bool,
            device_cells: AbstractSet[int]) -> str:
    if len(request.cells) > len(cells):
        return f"needs {len(request.cells)} NUMA cells ({NODES_SPEC}); the host has {len(cells)}"
    kind = "dedicated" if request.dedicated else "shared"
    pages = {"small": "", "any": "", "large": " in huge pages of one size"}.get(str(request.page_size),
                                                                               f" in {request.page_size} KiB pages")
    needs = [f"{_plural(len(c.vcpus), kind + ' CPU')} and {c.memory_mib} MiB{pages}" for c in request.cells]
    if len(needs) == 1:
        what = f"{needs[0]} in one cell"
    elif len(set(needs)) == 1:
        what = f"{needs[0]} in each of {len(needs)} distinct cells"
    else:
        what = f"{'; '.join(needs)} in {len(needs)} distinct cells"
    figures = []
    for cell in sorted(cells, key=lambda c: c.id):
        f = free[cell.id]
        hp = ", ".join(f"{max(n, 0)} of {s} KiB" for s, n in sorted(f.pages.items()) if s > SMALL_PAGE_KIB)
        cpus = len(_pinnable(f)) if request.dedicated else max(f.room, 0)
        figures.append(f"cell {cell.id} has {_plural(cpus, 'CPU')} and {max(f.memory, 0)} MiB free"
                       + (f" (pages free: {hp})" if hp and request.page_size != "small" else ""))
    reason = f"needs {what}; {', '.join(figures)}"
    if affine:
        on = f"its PCI devices are on {'cell' if len(device_cells) == 1 else 'cells'} " \
             f"{', '.join(map(str, sorted(device_cells)))}"
        rule = "a cell of it must share their socket" if request.pci_policy == "socket" else "it must be on them"
        reason += f" ({NUMA_POLICY_SPEC}={request.pci_policy}: {on}, {rule})"
    return reason
