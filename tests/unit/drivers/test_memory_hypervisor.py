"""The memory hypervisor: a host whose cells the test or [hypervisor.memory] sets."""

from __future__ import annotations

import pytest

from dpustack.contract.numa import HugePages, NumaCell
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver, MemoryHypervisorOptions
from dpustack.drivers.options import parse_options
from dpustack.errors import DriverError, InvalidInput


def test_by_default_the_host_has_two_empty_cells_of_four_cpus():
    cells = MemoryHypervisorDriver().topology()

    assert [(c.id, c.cpus, c.memory_mib, c.used_memory_mib, c.pinned_cpus) for c in cells] == [
        (0, [0, 1, 2, 3], 8192, 0, []), (1, [4, 5, 6, 7], 8192, 0, [])]


def test_the_cells_of_its_table_are_what_it_reports_by_id():
    table = {"cells": [{"id": 1, "cpus": [2, 3], "memory_mib": 2048, "used_memory_mib": 512, "pinned_cpus": [3]},
                       {"id": 0, "cpus": [1], "memory_mib": 1024,
                        "hugepages": [{"size_kib": 2048, "total": 64, "free": 60}]}]}
    driver = MemoryHypervisorDriver(**parse_options(MemoryHypervisorOptions, table, where="hypervisor.memory"))

    assert driver.topology() == [
        NumaCell(id=0, cpus=[1], memory_mib=1024, hugepages=[HugePages(size_kib=2048, total=64, free=60)]),
        NumaCell(id=1, cpus=[2, 3], memory_mib=2048, used_memory_mib=512, pinned_cpus=[3])]


def test_a_cell_that_is_no_numa_cell_names_its_field():
    table = {"cells": [{"id": 0, "cpus": [0], "memory_mib": 1024, "pinned_cpus": [5]}]}

    with pytest.raises(InvalidInput) as caught:
        parse_options(MemoryHypervisorOptions, table, where="hypervisor.memory")

    assert caught.value.field == "hypervisor.memory.cells"
    assert "cell 0: pinned CPUs [5] are not among its cpus" in caught.value.message


def test_a_test_changes_the_host_between_calls_and_never_through_what_it_was_given():
    driver = MemoryHypervisorDriver(cells=[NumaCell(id=0, cpus=[0, 1], memory_mib=4096)])
    given = driver.topology()
    given[0].used_memory_mib = 4096

    assert driver.topology()[0].used_memory_mib == 0
    driver.cells[0] = driver.cells[0].model_copy(update={"used_memory_mib": 1024, "pinned_cpus": [1]})
    assert (driver.topology()[0].used_memory_mib, driver.topology()[0].pinned_cpus) == (1024, [1])


def test_faults_armed_on_its_operations_fire():
    driver = MemoryHypervisorDriver()
    driver.faults.arm("validate", message="the host's libvirtd is down")
    driver.faults.arm("topology")

    with pytest.raises(DriverError, match="the host's libvirtd is down"):
        driver.validate()
    with pytest.raises(DriverError):
        driver.topology()
    driver.validate()
    assert driver.faults.calls == ["validate", "topology", "validate"]


def test_its_domains_use_memory_and_pin_cpus_but_the_ignored_ones_count_for_nothing():
    table = {"others": [{"uuid": "vm-a", "cell": 1, "memory_mib": 1024, "pinned_cpus": [4, 5]},
                         {"uuid": "vm-b", "cell": 7, "memory_mib": 512, "pinned_cpus": [0, 99]}]}
    driver = MemoryHypervisorDriver(**parse_options(MemoryHypervisorOptions, table, where="hypervisor.memory"))

    assert [(c.used_memory_mib, c.pinned_cpus) for c in driver.topology()] == [(512, [0]), (1024, [4, 5])]
    assert [(c.used_memory_mib, c.pinned_cpus) for c in driver.topology(ignore={"vm-a"})] == [(512, [0]), (0, [])]
    assert [(c.used_memory_mib, c.pinned_cpus) for c in driver.topology(ignore=["vm-a", "vm-b"])] == [
        (0, []), (0, [])]


def test_dedicated_cpus_split_each_cell_and_a_huge_page_domain_takes_pages_not_used_memory():
    table = {"cells": [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192,
                        "hugepages": [{"size_kib": 2048, "total": 1024, "free": 1024}]},
                       {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192}],
             "others": [{"uuid": "vm-a", "cell": 0, "memory_mib": 512, "page_size_kib": 2048}],
             "dedicated_cpus": "2-3,7"}
    driver = MemoryHypervisorDriver(**parse_options(MemoryHypervisorOptions, table, where="hypervisor.memory"))

    cells = driver.topology()

    assert [(c.dedicated_cpus, c.shared_cpus) for c in cells] == [([2, 3], [0, 1]), ([7], [4, 5, 6])]
    assert (cells[0].used_memory_mib, cells[0].hugepages[0].free) == (0, 1024 - 256)
    assert driver.topology(ignore={"vm-a"})[0].hugepages[0].free == 1024
    assert MemoryHypervisorDriver().topology()[0].dedicated_cpus is None  # no split by default


def test_a_bad_dedicated_cpus_names_the_option():
    with pytest.raises(InvalidInput) as caught:
        parse_options(MemoryHypervisorOptions, {"dedicated_cpus": "3-1"}, where="hypervisor.memory")

    assert caught.value.field == "hypervisor.memory.dedicated_cpus"
