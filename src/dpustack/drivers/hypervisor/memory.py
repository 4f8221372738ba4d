"""In-memory HypervisorDriver: a host whose cells a test (or ``[hypervisor.memory]``) sets."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from pydantic import Field

from dpustack.contract.numa import NumaCell
from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.hypervisor import HypervisorDriver
from dpustack.drivers.options import DriverOptions


def default_cells() -> list[NumaCell]:
    """Two cells of 4 CPUs and 8 GiB each, nothing reserved or used, no huge pages."""
    return [NumaCell(id=0, cpus=[0, 1, 2, 3], memory_mib=8192), NumaCell(id=1, cpus=[4, 5, 6, 7], memory_mib=8192)]


class MemoryHypervisorOptions(DriverOptions):
    """[hypervisor.memory]: the cells the pretend host offers, as ``topology()`` reports them."""

    cells: list[NumaCell] = Field(default_factory=default_cells, min_length=1)


class MemoryHypervisorDriver(HypervisorDriver):
    """A pretend host: ``topology()`` reports ``cells`` as given (the reservation is already out of them, and
    there are no domains to ``ignore``);
    tests may replace ``cells`` between calls, and arm faults on ``validate`` and ``topology``."""

    options = MemoryHypervisorOptions

    def __init__(self, *, cells: Iterable[NumaCell | dict[str, Any]] | None = None):
        self.faults = FaultInjector("hypervisor")
        self.cells = [NumaCell.model_validate(cell) for cell in cells] if cells is not None else default_cells()

    def validate(self) -> None:
        with self.faults.guard("validate"):
            pass

    def topology(self, ignore: Collection[str] = ()) -> list[NumaCell]:
        with self.faults.guard("topology"):
            return [cell.model_copy(deep=True) for cell in sorted(self.cells, key=lambda cell: cell.id)]
