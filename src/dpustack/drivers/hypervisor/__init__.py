"""HypervisorDriver: the hypervisor of a VM node's host, driven from the DPU's agent.

This slice reads what the host offers: its NUMA cells with the CPUs and
memory left for instances once the host's reservation is taken out, its
huge pages, and what the host's running domains already use
(:class:`dpustack.contract.numa.NumaCell`). The rules are
:mod:`dpustack.drivers.hypervisor.topology`'s; docs/vm.md tells them.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import Annotated

from pydantic import AfterValidator

from dpustack.contract.numa import NumaCell
from dpustack.drivers.base import Driver
from dpustack.drivers.hypervisor.topology import parse_cpu_list


def _a_cpu_list(text: str) -> str:
    parse_cpu_list(text)  # a ValueError becomes the option's validation error
    return text


#: an option holding a CPU list as Nova's cpu_shared_set and libvirt's cpuset spell it ("0-3,8,^2"; "": none)
CpuList = Annotated[str, AfterValidator(_a_cpu_list)]


class HypervisorDriver(Driver):
    """The host's hypervisor: can it be reached, and the NUMA cells it offers to instances."""

    interface = "hypervisor"

    @abc.abstractmethod
    def validate(self) -> None:
        """Check cheaply that the hypervisor answers; DriverError naming where it was looked for."""

    @abc.abstractmethod
    def topology(self, ignore: Collection[str] = ()) -> list[NumaCell]:
        """The host's cells, by id: CPUs and memory offered to instances (the reserved ones left out), huge
        pages per size, and what the host's running domains use, but for the domains whose UUIDs are in
        ``ignore`` (the node's own instances, which the controller's claims already count). DriverError
        if the host cannot be read or the reservation does not fit it."""
