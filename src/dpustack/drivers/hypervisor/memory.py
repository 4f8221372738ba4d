"""In-memory HypervisorDriver: a host whose cells (and running domains) a test or ``[hypervisor.memory]`` sets."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dpustack.contract.fields import MAX_COUNT
from dpustack.contract.numa import MAX_CELL_ID, MAX_CPU_ID, NumaCell
from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.hypervisor import HypervisorDriver
from dpustack.drivers.options import DriverOptions


def default_cells() -> list[NumaCell]:
    """Two cells of 4 CPUs and 8 GiB each, nothing reserved or used, no huge pages."""
    return [NumaCell(id=0, cpus=[0, 1, 2, 3], memory_mib=8192), NumaCell(id=1, cpus=[4, 5, 6, 7], memory_mib=8192)]


class MemoryDomain(BaseModel):
    """A running domain of the pretend host: the memory it uses in one cell and the offered CPUs it pins."""

    model_config = ConfigDict(extra="forbid")
    uuid: str = Field(min_length=1, max_length=64)
    cell: int = Field(0, ge=0, le=MAX_CELL_ID)
    memory_mib: int = Field(0, ge=0, le=MAX_COUNT)
    pinned_cpus: list[int] = Field(default_factory=list, max_length=MAX_CPU_ID + 1)


class MemoryHypervisorOptions(DriverOptions):
    """[hypervisor.memory]: the cells the pretend host offers, and the domains running on it."""

    cells: list[NumaCell] = Field(default_factory=default_cells, min_length=1)
    domains: list[MemoryDomain] = Field(default_factory=list)


class MemoryHypervisorDriver(HypervisorDriver):
    """A pretend host: ``topology()`` reports ``cells`` as given (the reservation is already out of them) plus
    what ``domains`` not in ``ignore`` use: each one's memory on its cell (cell 0 if the host lacks it) and
    the offered CPUs it pins. Tests may replace ``cells`` and ``domains`` between calls, and arm faults on
    ``validate`` and ``topology``."""

    options = MemoryHypervisorOptions

    def __init__(self, *, cells: Iterable[NumaCell | dict[str, Any]] | None = None,
                 domains: Iterable[MemoryDomain | dict[str, Any]] = ()):
        self.faults = FaultInjector("hypervisor")
        self.cells = [NumaCell.model_validate(cell) for cell in cells] if cells is not None else default_cells()
        self.domains = [MemoryDomain.model_validate(domain) for domain in domains]

    def validate(self) -> None:
        with self.faults.guard("validate"):
            pass

    def topology(self, ignore: Collection[str] = ()) -> list[NumaCell]:
        with self.faults.guard("topology"):
            cells = {cell.id: cell.model_copy(deep=True) for cell in self.cells}
            for domain in self.domains:
                if domain.uuid in ignore:
                    continue
                home = cells.get(domain.cell) or cells.get(0) or next(iter(cells.values()))
                home.used_memory_mib += domain.memory_mib
                for cell in cells.values():
                    cell.pinned_cpus = sorted(set(cell.pinned_cpus) | (set(domain.pinned_cpus) & set(cell.cpus)))
            return [cells[cell_id] for cell_id in sorted(cells)]
