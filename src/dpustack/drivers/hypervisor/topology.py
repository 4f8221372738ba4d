"""From what a host has and what its domains use to the NUMA cells it offers to instances.

Whatever the hypervisor, a driver reads the host's cells (:class:`HostCell`) and its running domains
(:class:`DomainUsage`) and :func:`offered_cells` applies the rules, which docs/vm.md tells:

* **reserved CPUs** (``reserved_cpus``, a CPU list) are left out of their cells; each must be a CPU of the host.
* **reserved memory** (``reserved_memory_mib``) is taken from the lowest-numbered cell first, the rest
  from the next one, and so on: the host's own memory (kernel, DMA zones, early allocations) lives on
  cell 0 first. More than the host has is an error.
* **dedicated CPUs** (``dedicated_cpus``, a CPU list, as Nova's ``cpu_dedicated_set``): the offered CPUs kept
  for pinned vCPUs, each cell's own; the rest are for shared vCPUs. Each must be a CPU of the host and not
  reserved. Not given: no split (``dedicated_cpus`` null), every offered CPU serves both.
* **huge pages**: every page size a cell lists but its smallest (the base pages, 4 KiB on x86), with its
  total and free count: free as the host counts it now, plus the pages the node's own instances
  (``own``) hold, since the controller's claims count those (never above the total).
* **domain memory** (a running domain's ``<memory>``): a part bound to host cells (a guest cell's
  ``<memnode>``, else the domain's ``<numatune><memory nodeset>``) is split evenly over those cells; an
  unbound part counts on the lowest-numbered cell, where an unpinned QEMU's memory is assumed to be. Only
  small-page memory counts as used: a part backed by huge pages is in the pages' free count already.
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
    page_kib: int | None = None  # the huge page size backing it; None: small pages


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
                  domains: Iterable[DomainUsage], *, own: Iterable[DomainUsage] = (), reserved_cpus: str = "",
                  dedicated_cpus: str = "", reserved_memory_mib: int = 0) -> list[NumaCell]:
    """The cells offered to instances, by id, after the module's rules; ``free_pages``: cell → size KiB →
    free pages; ``domains`` the host's other running domains, ``own`` the node's instances' (only their huge
    pages count, given back). DriverError naming the option if an option does not fit the host."""
    cells = sorted(cells, key=lambda cell: cell.id)
    if not cells:
        raise DriverError("the host reports no NUMA cell")
    reserved = _host_cpus(cells, reserved_cpus, "reserved_cpus")
    dedicated = _host_cpus(cells, dedicated_cpus, "dedicated_cpus") if dedicated_cpus.strip() else None
    if dedicated is not None and dedicated & reserved:
        raise DriverError(f"dedicated_cpus: CPU {format_cpu_list(dedicated & reserved)} is reserved for the host "
                          f"(reserved_cpus)", field="dedicated_cpus")
    offered_mib = _memory_after_reservation(cells, reserved_memory_mib)
    used_kib, _, pinned = _usage(cells, domains)
    _, own_pages, _ = _usage(cells, own)
    result = []
    for cell in cells:
        cpus = sorted(cpu.id for cpu in cell.cpus if cpu.id not in reserved)
        free = free_pages.get(cell.id, {})
        base_page = min(cell.pages, default=0)
        result.append(NumaCell(
            id=cell.id, cpus=cpus, memory_mib=offered_mib[cell.id],
            used_memory_mib=-(-used_kib[cell.id] // 1024),
            pinned_cpus=sorted(pinned & set(cpus)),
            dedicated_cpus=None if dedicated is None else sorted(dedicated & set(cpus)),
            hugepages=[HugePages(size_kib=size, total=total,
                                 free=min(total, free.get(size, 0) + own_pages[cell.id].get(size, 0)))
                       for size, total in sorted(cell.pages.items()) if size > base_page]))
    return result


def _host_cpus(cells: list[HostCell], text: str, option: str) -> set[int]:
    try:
        listed = parse_cpu_list(text)
    except ValueError as exc:
        raise DriverError(f"{option}: {exc}", field=option) from exc
    host = {cpu.id for cell in cells for cpu in cell.cpus}
    if not listed <= host:
        raise DriverError(f"{option}: the host has no CPU {format_cpu_list(listed - host)} "
                          f"(its CPUs are {format_cpu_list(host)})", field=option)
    return listed


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


def _usage(cells: list[HostCell],
           domains: Iterable[DomainUsage]) -> tuple[dict[int, int], dict[int, dict[int, int]], set[int]]:
    """Over every domain: the small-page KiB used per cell, the huge pages held per cell (size KiB → pages),
    and the host CPUs pinned."""
    ids = [cell.id for cell in cells]
    used = dict.fromkeys(ids, 0)
    pages: dict[int, dict[int, int]] = {cell: {} for cell in ids}
    pinned: set[int] = set()
    for domain in domains:
        pinned |= domain.pinned_cpus
        for part in domain.memory:
            targets = [cell for cell in ids if cell in part.host_cells] or ids[:1]
            share, rest = divmod(part.kib, len(targets))
            for index, cell in enumerate(targets):
                kib = share + (rest if index == 0 else 0)
                if part.page_kib is None:
                    used[cell] += kib
                else:
                    pages[cell][part.page_kib] = pages[cell].get(part.page_kib, 0) + -(-kib // part.page_kib)
    return used, pages, pinned
