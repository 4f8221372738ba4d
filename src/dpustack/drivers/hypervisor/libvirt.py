"""LibvirtHypervisorDriver: the host's libvirtd, reached from the DPU at a URI.

    [drivers]
    hypervisor = "libvirt"
    [hypervisor.libvirt]
    uri = "qemu+tls://host-1/system"     # the lab: its host namespace's libvirtd, qemu+unix:///system?socket=...
    reserved_cpus = "0-1"                # the host's own CPUs, as Nova's cpu_shared_set is spelled
    dedicated_cpus = "8-15"              # the offered CPUs for pinned vCPUs (Nova's cpu_dedicated_set); the
                                         # rest are for shared vCPUs; unset: every offered CPU serves both
    reserved_memory_mib = 4096           # the host's own memory, taken from cell 0 first
    migration_uri = "qemu+tls://host-1/system"  # where the other hosts' libvirtds reach this one for a live
                                         # migration here (default: uri)

Every call opens a connection of its own and closes it (a restarted libvirtd is harmless); libvirt's
refusals come as DriverError with its reason. The domain lifecycle, by UUID, is
:mod:`dpustack.drivers.hypervisor.libvirt_domains`'s, live migration
:mod:`dpustack.drivers.hypervisor.libvirt_migration`'s. The host's cells come from ``getCapabilities()``, their
free huge pages from ``getFreePages()``, and what the running domains use from each one's live XML;
:mod:`dpustack.drivers.hypervisor.topology` turns them into the cells offered. The XML this driver reads
is named once, in the table below, and read by :func:`parse_capabilities` and :func:`parse_domain`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator

import libvirt
from pydantic import Field, NonNegativeInt

from dpustack.contract.numa import NumaCell
from dpustack.drivers.hypervisor import CpuList, HypervisorDriver
from dpustack.drivers.hypervisor.libvirt_migration import LibvirtMigration
from dpustack.drivers.hypervisor.topology import (DomainUsage, HostCell, HostCpu, MemoryPart, offered_cells,
                                                  parse_cpu_list)
from dpustack.drivers.options import DriverOptions
from dpustack.errors import DriverError
from dpustack.libvirt_host import failing

# ------------------------------------------- the libvirt XML read, each name once (paths, then attributes)
# capabilities: host/topology/cells/cell[@id] with <memory unit>, <pages unit size>count, cpus/cpu[@id @siblings]
CELL, CELL_ID = "host/topology/cells/cell", "id"
CELL_MEMORY = "memory"
CELL_PAGES, PAGE_SIZE = "pages", "size"
CELL_CPU, CPU_ID, CPU_SIBLINGS = "cpus/cpu", "id", "siblings"
# a running domain: <name>, <uuid>, <memory unit>, cpu/numa/cell[@id @memory @unit], numatune/memory[@nodeset],
# numatune/memnode[@cellid @nodeset], cputune/vcpupin[@cpuset], memoryBacking/hugepages[/page[@size @unit @nodeset]]
DOMAIN_NAME, DOMAIN_UUID = "name", "uuid"
DOMAIN_MEMORY = "memory"
GUEST_CELL, GUEST_CELL_ID, GUEST_CELL_MEMORY = "cpu/numa/cell", "id", "memory"
NUMATUNE_MEMORY, NODESET = "numatune/memory", "nodeset"
MEMNODE, MEMNODE_CELL = "numatune/memnode", "cellid"
VCPUPIN, VCPUPIN_CPUS = "cputune/vcpupin", "cpuset"
HUGEPAGES, HUGEPAGE, HUGEPAGE_SIZE = "memoryBacking/hugepages", "page", "size"  # a page's nodeset: guest cells
UNIT, DEFAULT_UNIT = "unit", "KiB"  # a size's unit attribute, on every sized element above
SCALES = "kmgtpe"  # libvirt's unit prefixes: k/KiB = 1024, KB = 1000, ..., b/bytes = 1


class LibvirtHypervisorOptions(DriverOptions):
    """[hypervisor.libvirt]: where the host's libvirtd is (``uri`` for this node's agent; ``migration_uri`` for
    the other hosts' libvirtds migrating a domain here, default ``uri``), and what of the host is kept for
    itself."""

    uri: str = Field(min_length=1)
    migration_uri: str = ""
    reserved_cpus: CpuList = ""
    dedicated_cpus: CpuList = ""
    reserved_memory_mib: NonNegativeInt = 0


class LibvirtHypervisorDriver(LibvirtMigration, HypervisorDriver):
    """The host's hypervisor through libvirt at ``uri``."""

    options = LibvirtHypervisorOptions

    def __init__(self, *, uri: str, reserved_cpus: str = "", dedicated_cpus: str = "",
                 reserved_memory_mib: int = 0, migration_uri: str = ""):
        for option, text in (("reserved_cpus", reserved_cpus), ("dedicated_cpus", dedicated_cpus)):
            try:
                parse_cpu_list(text)
            except ValueError as exc:
                raise DriverError(f"{option}: {exc}", field=option) from exc
        if reserved_memory_mib < 0:
            raise DriverError(f"reserved_memory_mib: {reserved_memory_mib} is negative", field="reserved_memory_mib")
        self.uri = uri
        self.migration_uri = migration_uri or uri
        self.reserved_cpus = reserved_cpus
        self.dedicated_cpus = dedicated_cpus
        self.reserved_memory_mib = reserved_memory_mib

    def validate(self) -> None:
        with self._connection() as connection:
            with failing(f"the hypervisor at {self.uri} does not answer"):
                connection.getLibVersion()

    def topology(self, ignore: Collection[str] = ()) -> list[NumaCell]:
        ignored = {uuid.lower() for uuid in ignore}
        with self._connection() as connection:
            with failing(f"cannot read the capabilities of the hypervisor at {self.uri}"):
                cells = parse_capabilities(connection.getCapabilities())
            free = {cell.id: _free_pages(connection, cell) for cell in cells}
            default_page = default_huge_page(cells)
            domains = [parse_domain(xml, default_page) for xml in _running_domains(connection)]
        return offered_cells(cells, free, [usage for usage in domains if usage.uuid not in ignored],
                             own=[usage for usage in domains if usage.uuid in ignored],
                             reserved_cpus=self.reserved_cpus, dedicated_cpus=self.dedicated_cpus,
                             reserved_memory_mib=self.reserved_memory_mib)


# ------------------------------------------------------------------ reading the XML
def parse_capabilities(xml: str) -> list[HostCell]:
    """The host's NUMA cells from ``getCapabilities()``; DriverError naming the first field not understood."""
    root = _document(xml, "capabilities")
    cells = []
    for index, cell in enumerate(root.iterfind(CELL), start=1):
        where = f"capabilities: {CELL}[{index}]"
        pages = {}
        for page in cell.iterfind(CELL_PAGES):
            size = _kib(page.get(PAGE_SIZE), page.get(UNIT), f"{where}/{CELL_PAGES}/@{PAGE_SIZE}")
            pages[size] = _count(page.text, f"{where}/{CELL_PAGES}[@{PAGE_SIZE}='{page.get(PAGE_SIZE)}']")
        memory = cell.find(CELL_MEMORY)
        if memory is None:
            raise _not_understood(f"{where}/{CELL_MEMORY}", "missing")
        cpus = tuple(HostCpu(id=_count(cpu.get(CPU_ID), f"{where}/{CELL_CPU}/@{CPU_ID}"),
                             siblings=_cpus(cpu.get(CPU_SIBLINGS, cpu.get(CPU_ID, "")),
                                            f"{where}/{CELL_CPU}/@{CPU_SIBLINGS}"))
                     for cpu in cell.iterfind(CELL_CPU))
        cells.append(HostCell(id=_count(cell.get(CELL_ID), f"{where}/@{CELL_ID}"),
                              memory_kib=_kib(memory.text, memory.get(UNIT), f"{where}/{CELL_MEMORY}"),
                              cpus=cpus, pages=pages))
    return cells


def default_huge_page(cells: list[HostCell]) -> int | None:
    """The huge page size a domain's ``<hugepages/>`` without a ``<page>`` gets: the host's default, taken to
    be its smallest huge page size (2 MiB on x86, as Linux's default hugepagesz); None without huge pages."""
    return min((size for cell in cells for size in sorted(cell.pages)[1:]), default=None)


def parse_domain(xml: str, default_page_kib: int | None = None) -> DomainUsage:
    """What a running domain takes from the host, from its live XML (the memory of each guest cell bound to
    its memnode's host cells, else to the domain's nodeset, and the huge page size backing it, if any; CPUs
    its vCPUs are pinned to one each). ``default_page_kib``: the size of a ``<hugepages/>`` naming none."""
    root = _document(xml, "domain XML")
    name = root.findtext(DOMAIN_NAME, default="?")
    where = f"domain '{name}'"
    memory = root.find(DOMAIN_MEMORY)
    if memory is None:
        raise _not_understood(f"{where}: {DOMAIN_MEMORY}", "missing")
    total = _kib(memory.text, memory.get(UNIT), f"{where}: {DOMAIN_MEMORY}")
    numatune = root.find(NUMATUNE_MEMORY)
    bound = _nodeset(numatune, f"{where}: {NUMATUNE_MEMORY}/@{NODESET}")
    memnodes = {_count(node.get(MEMNODE_CELL), f"{where}: {MEMNODE}/@{MEMNODE_CELL}"):
                _nodeset(node, f"{where}: {MEMNODE}/@{NODESET}") for node in root.iterfind(MEMNODE)}
    page_of = _huge_pages(root, where, default_page_kib)
    parts = []
    for cell in root.iterfind(GUEST_CELL):
        cell_where = f"{where}: {GUEST_CELL}[@{GUEST_CELL_ID}='{cell.get(GUEST_CELL_ID)}']"
        guest_cell = _count(cell.get(GUEST_CELL_ID), f"{cell_where}/@{GUEST_CELL_ID}")
        parts.append(MemoryPart(_kib(cell.get(GUEST_CELL_MEMORY), cell.get(UNIT), f"{cell_where}/@{GUEST_CELL_MEMORY}"),
                                memnodes.get(guest_cell, bound), page_of(guest_cell)))
    rest = total - sum(part.kib for part in parts)
    if rest > 0:  # memory no guest cell holds (a domain without guest NUMA: all of it)
        parts.append(MemoryPart(rest, bound, page_of(None)))
    pinned: set[int] = set()
    for pin in root.iterfind(VCPUPIN):
        cpus = _cpus(pin.get(VCPUPIN_CPUS), f"{where}: {VCPUPIN}/@{VCPUPIN_CPUS}")
        if len(cpus) == 1:
            pinned |= cpus
    uuid = (root.findtext(DOMAIN_UUID) or "").strip().lower()
    return DomainUsage(name=name, uuid=uuid, memory=tuple(parts), pinned_cpus=frozenset(pinned))


def _huge_pages(root: ET.Element, where: str, default_kib: int | None) -> Callable[[int | None], int | None]:
    """Guest cell (None: memory outside guest cells) → the huge page size backing it, None for small pages.
    With ``<hugepages>`` all the memory is in huge pages, as libvirt does it: a cell's are those of the
    ``<page>`` whose nodeset holds it, else of a ``<page>`` without nodeset, else the default size."""
    backing = root.find(HUGEPAGES)
    if backing is None:
        return lambda guest_cell: None
    sizes: dict[int | None, int | None] = {None: default_kib}
    for page in backing.iterfind(HUGEPAGE):
        size = _kib(page.get(HUGEPAGE_SIZE), page.get(UNIT), f"{where}: {HUGEPAGES}/{HUGEPAGE}/@{HUGEPAGE_SIZE}")
        cells = _nodeset(page, f"{where}: {HUGEPAGES}/{HUGEPAGE}/@{NODESET}")
        for cell in cells:
            sizes.setdefault(cell, size)
        if not cells:
            sizes[None] = size
    return lambda guest_cell: sizes.get(guest_cell, sizes[None])


def _document(xml: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DriverError(f"the hypervisor's answer ({what}) is not XML: {exc}") from exc


def _count(text: str | None, where: str) -> int:
    if text is None or not text.strip().isdigit():
        raise _not_understood(where, "missing" if text is None else f"{text!r} is not a whole number")
    return int(text)


def _kib(amount: str | None, unit: str | None, where: str) -> int:
    """``amount`` of ``unit`` (default KiB) in KiB, rounded up."""
    count = _count(amount, where)
    scale = (unit or DEFAULT_UNIT).lower()
    if scale in ("b", "byte", "bytes"):
        per_unit = 1
    elif scale[:1] in SCALES and scale[1:] in ("", "ib", "b"):
        per_unit = (1000 if scale[1:] == "b" else 1024) ** (SCALES.index(scale[0]) + 1)
    else:
        raise _not_understood(where, f"unit {unit!r} is none of libvirt's")
    return -(-count * per_unit // 1024)


def _cpus(text: str | None, where: str) -> frozenset[int]:
    if text is None:
        raise _not_understood(where, "missing")
    try:
        return frozenset(parse_cpu_list(text))
    except ValueError as exc:
        raise _not_understood(where, str(exc)) from exc


def _nodeset(element: ET.Element | None, where: str) -> frozenset[int]:
    """The host cells an element's ``nodeset`` binds memory to; none when it has no nodeset."""
    if element is None or element.get(NODESET) is None:
        return frozenset()
    return _cpus(element.get(NODESET), where)


def _not_understood(where: str, problem: str) -> DriverError:
    return DriverError(f"the hypervisor's answer is not understood: {where}: {problem}")


# ------------------------------------------------------------------ talking to libvirt
def _free_pages(connection: libvirt.virConnect, cell: HostCell) -> dict[int, int]:
    """Free pages of each huge page size of ``cell`` (the base size left out), by size in KiB."""
    sizes = sorted(cell.pages)[1:]
    if not sizes:
        return {}
    with failing(f"cannot read the free huge pages of cell {cell.id}"):
        return dict(connection.getFreePages(sizes, cell.id, 1).get(cell.id, {}))


def _running_domains(connection: libvirt.virConnect) -> Iterator[str]:
    """The live XML of every running domain; one that is gone meanwhile is left out."""
    with failing("cannot list the host's domains"):
        domains = connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    for domain in domains:
        try:
            yield domain.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise DriverError(f"cannot read the XML of a domain of the host: {exc.get_error_message()}") from exc
