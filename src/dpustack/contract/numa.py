"""NUMA on a VM node's host: the cells its hypervisor offers, and where an instance is placed in them.

* :class:`NumaCell`: one cell as the node's agent reads it from the host's hypervisor, with what is
  reserved for the host already left out and what the host's other domains use.
* :class:`NumaPlacement`: the cells one instance got, each with its guest vCPUs, the host CPUs they run on
  (pinned, one each, with ``hw:cpu_policy=dedicated``; else the cell's shared set), its memory and page size.

Memory is in MiB, huge page sizes in KiB (as libvirt and Linux name them: 2048, 1048576).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from dpustack.contract.fields import MAX_COUNT

MAX_CELL_ID = 1023
MAX_CPU_ID = 65535


class HugePages(BaseModel):
    """The host's huge pages of one size in one cell."""

    size_kib: int = Field(ge=4, le=MAX_COUNT)
    total: int = Field(ge=0, le=MAX_COUNT)
    free: int = Field(ge=0, le=MAX_COUNT)


class NumaCell(BaseModel):
    """One NUMA cell of the host, as offered to instances. Each field is checked alone here; whether the
    cells make sense together (and each with itself) is :func:`check_cells`'s."""

    id: int = Field(ge=0, le=MAX_CELL_ID)
    cpus: list[int] = Field(description="host CPU ids offered to instances, the reserved ones left out",
                            max_length=MAX_CPU_ID + 1)
    memory_mib: int = Field(ge=0, le=MAX_COUNT, description="memory offered to instances, the reserved left out; "
                                                            "its huge page pools are part of it")
    used_memory_mib: int = Field(default=0, ge=0, le=MAX_COUNT,
                                 description="small-page memory the host's domains use of it, the node's own "
                                             "instances left out (the controller's claims count those); what "
                                             "they back with huge pages shows in the pages' free counts")
    pinned_cpus: list[int] = Field(default_factory=list, max_length=MAX_CPU_ID + 1,
                                   description="offered CPUs a domain of the host, not one of the node's own "
                                               "instances, is pinned to")
    dedicated_cpus: list[int] | None = Field(default=None, max_length=MAX_CPU_ID + 1,
                                             description="offered CPUs kept for pinned (dedicated) vCPUs, as "
                                                         "Nova's cpu_dedicated_set; the others are for shared "
                                                         "vCPUs. null: no split, every offered CPU serves both")
    hugepages: list[HugePages] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _cpus_are_ids(self) -> "NumaCell":
        for cpu in (*self.cpus, *self.pinned_cpus, *(self.dedicated_cpus or ())):
            if not 0 <= cpu <= MAX_CPU_ID:
                raise ValueError(f"CPU id {cpu} is not in 0..{MAX_CPU_ID}")
        return self

    @property
    def shared_cpus(self) -> list[int]:
        """The offered CPUs shared vCPUs may float over: all of them without a split."""
        return sorted(set(self.cpus) - set(self.dedicated_cpus or ()))

    @property
    def hugepage_mib(self) -> int:
        """The memory of its huge page pools (total pages x size), which small-page guests cannot use."""
        return sum(pages.total * pages.size_kib for pages in self.hugepages) // 1024


def cell_problem(cell: NumaCell) -> str | None:
    """What makes one cell nonsense, said for a person; None if nothing."""
    where = f"cell {cell.id}"
    if len(set(cell.cpus)) != len(cell.cpus):
        return f"{where}: a CPU is listed twice in its cpus"
    if not set(cell.pinned_cpus) <= set(cell.cpus):
        return f"{where}: pinned CPUs {sorted(set(cell.pinned_cpus) - set(cell.cpus))} are not among its cpus"
    if cell.dedicated_cpus is not None and not set(cell.dedicated_cpus) <= set(cell.cpus):
        return (f"{where}: dedicated CPUs {sorted(set(cell.dedicated_cpus) - set(cell.cpus))} are not among "
                f"its cpus")
    sizes = [pages.size_kib for pages in cell.hugepages]
    if len(set(sizes)) != len(sizes):
        return f"{where}: a huge page size is listed twice"
    for pages in cell.hugepages:
        if pages.free > pages.total:
            return f"{where}: {pages.free} free {pages.size_kib} KiB pages of only {pages.total}"
    if cell.hugepage_mib > cell.memory_mib:
        return f"{where}: its huge page pools ({cell.hugepage_mib} MiB) exceed its memory ({cell.memory_mib} MiB)"
    return None


def check_cells(cells: list[NumaCell]) -> list[NumaCell]:
    """A host's cells: each sound (:func:`cell_problem`), each id once, and no CPU in two cells;
    ValueError saying what is wrong otherwise."""
    seen: dict[int, int] = {}
    ids = set()
    for cell in cells:
        if cell.id in ids:
            raise ValueError(f"cell id {cell.id} is listed twice")
        ids.add(cell.id)
        if (problem := cell_problem(cell)) is not None:
            raise ValueError(problem)
        for cpu in cell.cpus:
            if cpu in seen:
                raise ValueError(f"CPU {cpu} is in cells {seen[cpu]} and {cell.id}")
            seen[cpu] = cell.id
    return cells


class CellPlacement(BaseModel):
    """The part of an instance in one host cell (its guest cell ``guest_cell``)."""

    guest_cell: int = Field(ge=0, le=MAX_CELL_ID)
    host_cell: int = Field(ge=0, le=MAX_CELL_ID)
    vcpus: list[int] = Field(min_length=1, description="the guest's vCPU numbers in this cell")
    host_cpus: list[int] = Field(min_length=1, description="with pinning: vcpus[i] runs on host_cpus[i]; "
                                                            "else the host CPUs the vCPUs float over")
    memory_mib: int = Field(ge=1, le=MAX_COUNT)


class NumaPlacement(BaseModel):
    """Where one instance runs on its node's host."""

    cells: list[CellPlacement] = Field(min_length=1)
    pinned: bool = Field(description="hw:cpu_policy=dedicated: each vCPU has a host CPU of its own")
    page_size_kib: int | None = Field(default=None, description="huge pages backing its memory; null: small pages")

    @model_validator(mode="after")
    def _consistent(self) -> "NumaPlacement":
        vcpus = [vcpu for cell in self.cells for vcpu in cell.vcpus]
        if sorted(vcpus) != list(range(len(vcpus))):
            raise ValueError("cells: the vCPUs must be 0..n-1, each in one cell")
        if self.pinned:
            for cell in self.cells:
                if len(cell.host_cpus) != len(cell.vcpus):
                    raise ValueError(f"cell {cell.guest_cell}: a pinned vCPU needs one host CPU each")
            host = [cpu for cell in self.cells for cpu in cell.host_cpus]
            if len(set(host)) != len(host):
                raise ValueError("cells: a host CPU is pinned to two vCPUs")
        return self

    @property
    def vcpus(self) -> int:
        return sum(len(cell.vcpus) for cell in self.cells)

    @property
    def memory_mib(self) -> int:
        return sum(cell.memory_mib for cell in self.cells)
