"""From what a host has and what its domains use to the NUMA cells it offers to instances.

Whatever the hypervisor, a driver reads the host's cells (:class:`HostCell`) and its running domains
(:class:`DomainUsage`) and :func:`offered_cells` applies the rules, which docs/vm.md tells:

* **reserved CPUs** (``reserved_cpus``, a CPU list) are left out of their cells; each must be a CPU of the host.
* **reserved memory** (``reserved_memory_mib``) is taken from the lowest-numbered cell first, the rest
  from the next one, and so on: the host's own memory (kernel, DMA zones, early allocations) lives on
  cell 0 first. More than the host has is an error.
* **huge pages**: every page size a cell lists but its smallest (the base pages, 4 KiB on x86), with its
  total and free count (free as the host counts it now: what the domains took is not free).
* **domain memory** (a running domain's ``<memory>``): a part bound to host cells (a guest cell's
  ``<memnode>``, else the domain's ``<numatune><memory nodeset>``) is split evenly over those cells; an
  unbound part counts on the lowest-numbered cell, where an unpinned QEMU's memory is assumed to be.
* **pinned CPUs**: a vCPU bound to exactly one host CPU (``<vcpupin cpuset='5'/>``) pins it; a vCPU
  allowed on several CPUs floats over them and pins none. Only offered CPUs are reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dpustack.contract.numa import MAX_CPU_ID, HugePages, NumaCell
from dpustack.errors import DriverError

_CPU_ITEM = re.compile(r"^(\^)?(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class HostCpu:
    """One CPU of the host and its hyperthread siblings (itself included)."""

    id: int
    siblings: frozenset[int]


@dataclass(frozen=True)
class HostCell:
    """One NUMA cell as the hypervisor reports it: its memory, CPUs, and page counts by size (KiB)."""

    id: int
    memory_kib: int
    cpus: tuple[HostCpu, ...]
    pages: Mapping[int, int]


@dataclass(frozen=True)
class MemoryPart:
    """Some of a domain's memory and the host cells it is bound to (empty: not bound)."""

    kib: int
    host_cells: frozenset[int]


@dataclass(frozen=True)
class DomainUsage:
    """What one running domain takes from the host."""

    name: str
    uuid: str  # lower case
    memory: tuple[MemoryPart, ...]
    pinned_cpus: frozenset[int]


def parse_cpu_list(text: str) -> set[int]:
    """The CPUs of a list such as ``"0-3,8,^2"`` (ranges, single ids, ``^`` excluding); ``""`` is none.

    ValueError saying what is wrong with it otherwise.
    """
    included: set[int] = set()
    excluded: set[int] = set()
    for item in (part.strip() for part in text.split(",")) if text.strip() else ():
        match = _CPU_ITEM.match(item)
        if match is None:
            raise ValueError(f"{text!r} is not a CPU list like '0-1,8' ({item!r} is neither an id nor a range)")
        first = int(match.group(2))
        last = int(match.group(3)) if match.group(3) is not None else first
        if last < first or last > MAX_CPU_ID:
            raise ValueError(f"{text!r} is not a CPU list like '0-1,8' ({item!r} is no range of ids 0..{MAX_CPU_ID})")
        (excluded if match.group(1) else included).update(range(first, last + 1))
    return included - excluded


def format_cpu_list(cpus: Iterable[int]) -> str:
    """``{0, 1, 2, 8}`` as ``"0-2,8"``."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


def offered_cells(cells: list[HostCell], free_pages: Mapping[int, Mapping[int, int]],
                  domains: Iterable[DomainUsage], *, reserved_cpus: str = "",
                  reserved_memory_mib: int = 0) -> list[NumaCell]:
    """The cells offered to instances, by id, after the module's rules; ``free_pages``: cell → size KiB →
    free pages. DriverError naming the option if the reservation does not fit the host."""
    cells = sorted(cells, key=lambda cell: cell.id)
    if not cells:
        raise DriverError("the host reports no NUMA cell")
    reserved = _reserved_cpus(cells, reserved_cpus)
    offered_mib = _memory_after_reservation(cells, reserved_memory_mib)
    used_kib, pinned = _usage(cells, domains)
    result = []
    for cell in cells:
        cpus = sorted(cpu.id for cpu in cell.cpus if cpu.id not in reserved)
        free = free_pages.get(cell.id, {})
        base_page = min(cell.pages, default=0)
        result.append(NumaCell(
            id=cell.id, cpus=cpus, memory_mib=offered_mib[cell.id],
            used_memory_mib=-(-used_kib[cell.id] // 1024),
            pinned_cpus=sorted(pinned & set(cpus)),
            hugepages=[HugePages(size_kib=size, total=total, free=free.get(size, 0))
                       for size, total in sorted(cell.pages.items()) if size > base_page]))
    return result


def _reserved_cpus(cells: list[HostCell], text: str) -> set[int]:
    try:
        reserved = parse_cpu_list(text)
    except ValueError as exc:
        raise DriverError(f"reserved_cpus: {exc}", field="reserved_cpus") from exc
    host = {cpu.id for cell in cells for cpu in cell.cpus}
    if not reserved <= host:
        raise DriverError(f"reserved_cpus: the host has no CPU {format_cpu_list(reserved - host)} "
                          f"(its CPUs are {format_cpu_list(host)})", field="reserved_cpus")
    return reserved


def _memory_after_reservation(cells: list[HostCell], reserved_mib: int) -> dict[int, int]:
    """Each cell's MiB once ``reserved_mib`` is taken, lowest cell first."""
    total = sum(cell.memory_kib // 1024 for cell in cells)
    if reserved_mib > total:
        raise DriverError(f"reserved_memory_mib: {reserved_mib} MiB is more than the host's {total} MiB",
                          field="reserved_memory_mib")
    left, offered = reserved_mib, {}
    for cell in cells:
        taken = min(left, cell.memory_kib // 1024)
        offered[cell.id] = cell.memory_kib // 1024 - taken
        left -= taken
    return offered


def _usage(cells: list[HostCell], domains: Iterable[DomainUsage]) -> tuple[dict[int, int], set[int]]:
    """KiB used per cell and the host CPUs pinned, over every domain."""
    ids = [cell.id for cell in cells]
    used = dict.fromkeys(ids, 0)
    pinned: set[int] = set()
    for domain in domains:
        pinned |= domain.pinned_cpus
        for part in domain.memory:
            targets = [cell for cell in ids if cell in part.host_cells] or ids[:1]
            share, rest = divmod(part.kib, len(targets))
            for index, cell in enumerate(targets):
                used[cell] += share + (rest if index == 0 else 0)
    return used, pinned
