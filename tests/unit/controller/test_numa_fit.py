"""NUMA placement: the flavor vocabulary, and fitting instances into a host's cells beside their claims."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpustack.contract.numa import HugePages, NumaCell, NumaPlacement
from dpustack.controller.numa_fit import (DoesNotFit, InvalidExtraSpec, affine_cells, fit, free_in_cells,
                                          is_numa_spec, numa_request, shared_cpus)
from dpustack.drivers.hypervisor.domain_xml import DomainSpec, cputune, vcpu
from dpustack.errors import Conflict, InvalidInput

GIB_KIB, HUGE_KIB = 1048576, 2048


def cell(id, cpus, memory=8192, *, used=0, pinned=(), pages=()):
    return NumaCell(id=id, cpus=list(cpus), memory_mib=memory, used_memory_mib=used, pinned_cpus=list(pinned),
                    hugepages=[HugePages(size_kib=s, total=n, free=n) for s, n in pages])


def two_cells(**kwargs):
    return [cell(0, range(0, 4), **kwargs), cell(1, range(4, 8), **kwargs)]


# -- the flavor vocabulary ---------------------------------------------------------------------------------
def test_defaults_are_one_shared_small_page_cell_with_the_legacy_pci_policy():
    request = numa_request(4, 2048, {})
    assert (request.dedicated, request.page_size, request.pci_policy, request.numa_nodes) == \
        (False, "small", "legacy", None)
    assert [(c.vcpus, c.memory_mib) for c in request.cells] == [((0, 1, 2, 3), 2048)]


def test_numa_nodes_split_vcpus_and_memory_evenly():
    request = numa_request(4, 2048, {"hw:numa_nodes": "2", "hw:cpu_policy": "Dedicated"})
    assert request.dedicated and request.numa_nodes == 2
    assert [(c.vcpus, c.memory_mib) for c in request.cells] == [((0, 1), 1024), ((2, 3), 1024)]


def test_explicit_cells_take_cpu_lists_and_memory():
    request = numa_request(6, 3072, {"hw:numa_nodes": "2", "hw:numa_cpus.0": "0-3,^1", "hw:numa_mem.0": "1024",
                                     "hw:numa_cpus.1": "1,4,5", "hw:numa_mem.1": "2048"})
    assert [(c.vcpus, c.memory_mib) for c in request.cells] == [((0, 2, 3), 1024), ((1, 4, 5), 2048)]


@pytest.mark.parametrize("text, kib", [("small", "small"), ("LARGE", "large"), ("any", "any"), ("2048", 2048),
                                       ("2MB", 2048), ("2 MiB", 2048), ("1GB", GIB_KIB), ("1G", GIB_KIB),
                                       ("2048KB", 2048), ("4", "small"), ("4KiB", "small")])
def test_page_sizes_are_names_or_sizes_in_kib_or_with_units(text, kib):
    assert numa_request(1, 1024, {"hw:mem_page_size": text}).page_size == kib


@pytest.mark.parametrize("specs, key", [
    ({"hw:cpu_policy": "pinned"}, "hw:cpu_policy"),
    ({"hw:cpu_policy": ""}, "hw:cpu_policy"),
    ({"hw:numa_nodes": "0"}, "hw:numa_nodes"),
    ({"hw:numa_nodes": "two"}, "hw:numa_nodes"),
    ({"hw:numa_nodes": "-1"}, "hw:numa_nodes"),
    ({"hw:numa_nodes": "5"}, "hw:numa_nodes"),                # more cells than vCPUs
    ({"hw:numa_nodes": "3"}, "hw:numa_nodes"),                # 4 vCPUs do not split in 3
    ({"hw:mem_page_size": "huge"}, "hw:mem_page_size"),
    ({"hw:mem_page_size": "3MB"}, "hw:mem_page_size"),        # not a power of two
    ({"hw:mem_page_size": "2"}, "hw:mem_page_size"),          # below the small page
    ({"hw:mem_page_size": "2TB"}, "hw:mem_page_size"),
    ({"hw:pci_numa_affinity_policy": "strict"}, "hw:pci_numa_affinity_policy"),
    ({"hw:numa_cpus.0": "0-3", "hw:numa_mem.0": "4096"}, "hw:numa_cpus.0"),    # without hw:numa_nodes
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "2048", "hw:numa_mem.1": "2048"},
     "hw:numa_cpus.1"),
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "2048", "hw:numa_cpus.1": "2,3",
      "hw:numa_mem.1": "2048", "hw:numa_cpus.2": "3"}, "hw:numa_cpus.2"),
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0-1,", "hw:numa_mem.0": "2048", "hw:numa_cpus.1": "2,3",
      "hw:numa_mem.1": "2048"}, "hw:numa_cpus.0"),
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "2048", "hw:numa_cpus.1": "2-4",
      "hw:numa_mem.1": "2048"}, "hw:numa_cpus.1"),            # vCPU 4 of 4
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "2048", "hw:numa_cpus.1": "1,2,3",
      "hw:numa_mem.1": "2048"}, "hw:numa_cpus.0"),            # vCPU 1 twice
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "0", "hw:numa_cpus.1": "2,3",
      "hw:numa_mem.1": "4096"}, "hw:numa_mem.0"),
    ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0,1", "hw:numa_mem.0": "1024", "hw:numa_cpus.1": "2,3",
      "hw:numa_mem.1": "1024"}, "hw:numa_mem.0"),             # adds up to 2048, not 4096
])
def test_a_bad_value_is_refused_naming_its_key(specs, key):
    with pytest.raises(InvalidExtraSpec) as raised:
        numa_request(4, 4096, specs)
    assert raised.value.field == key and key.split(".")[0] in raised.value.message
    assert isinstance(raised.value, InvalidInput) and raised.value.to_dict()["error"]["field"] == key


def test_the_error_names_the_allowed_values():
    with pytest.raises(InvalidExtraSpec, match="shared or dedicated"):
        numa_request(1, 512, {"hw:cpu_policy": "pinned"})
    with pytest.raises(InvalidExtraSpec, match="required or preferred or legacy or socket"):
        numa_request(1, 512, {"hw:pci_numa_affinity_policy": "x"})


# -- fitting -------------------------------------------------------------------------------------------------
def test_dedicated_cpus_are_pinned_lowest_first_and_never_given_twice():
    cells = two_cells(pinned=[])
    request = numa_request(3, 1024, {"hw:cpu_policy": "dedicated"})
    first = fit(request, cells)
    second = fit(request, cells, [first])
    assert first.pinned and first.cells[0].host_cpus == [0, 1, 2] and first.cells[0].host_cell == 0
    assert second.cells[0].host_cell == 1 and second.cells[0].host_cpus == [4, 5, 6]
    with pytest.raises(DoesNotFit) as refused:
        fit(request, cells, [first, second])
    assert str(refused.value) == ("needs 3 dedicated CPUs and 1024 MiB in one cell; "
                                  "cell 0 has 1 CPU and 7168 MiB free, cell 1 has 1 CPU and 7168 MiB free")
    assert isinstance(refused.value, Conflict)


def test_a_flavor_larger_than_any_cell_is_refused_even_if_the_host_has_room():
    cells = [cell(0, range(4), 4096, pinned=[0, 1, 2]), cell(1, range(4, 8), 4096, pinned=[4, 5, 6, 7])]
    with pytest.raises(DoesNotFit, match="needs 2 dedicated CPUs and 512 MiB in one cell; "
                                         "cell 0 has 1 CPU and 4096 MiB free, cell 1 has 0 CPUs"):
        fit(numa_request(2, 512, {"hw:cpu_policy": "dedicated"}), cells)
    with pytest.raises(DoesNotFit, match="needs 1 shared CPU and 6144 MiB in one cell"):
        fit(numa_request(1, 6144, {}), two_cells(memory=4096))


def test_numa_nodes_2_spreads_over_two_distinct_cells():
    placement = fit(numa_request(4, 4096, {"hw:numa_nodes": "2", "hw:cpu_policy": "dedicated"}), two_cells())
    assert [(c.guest_cell, c.host_cell, c.vcpus, c.host_cpus, c.memory_mib) for c in placement.cells] == \
        [(0, 0, [0, 1], [0, 1], 2048), (1, 1, [2, 3], [4, 5], 2048)]
    with pytest.raises(DoesNotFit, match="needs 2 NUMA cells"):
        fit(numa_request(2, 1024, {"hw:numa_nodes": "2"}), [cell(0, range(8))])


def test_numa_nodes_2_refuses_when_only_one_cell_has_room_and_says_so():
    cells = [cell(0, range(4)), cell(1, range(4, 8), pinned=range(4, 8))]
    with pytest.raises(DoesNotFit, match="in each of 2 distinct cells; cell 0 has 4 CPUs .* cell 1 has 0 CPUs"):
        fit(numa_request(2, 1024, {"hw:numa_nodes": "2"}), cells)


def test_explicit_uneven_cells_are_matched_to_cells_that_hold_them():
    # Cell 0 comes first (most free memory) and would hold the small guest cell 0, leaving the big guest
    # cell 1 nowhere: the small one is moved to cell 1.
    cells = [cell(0, range(6), 16384), cell(1, range(6, 8), 8192)]
    request = numa_request(5, 2048, {"hw:numa_nodes": "2", "hw:numa_cpus.0": "0", "hw:numa_mem.0": "1024",
                                     "hw:numa_cpus.1": "1-4", "hw:numa_mem.1": "1024",
                                     "hw:cpu_policy": "dedicated"})
    placement = fit(request, cells)
    assert [(c.guest_cell, c.host_cell, c.host_cpus) for c in placement.cells] == [(0, 1, [6]), (1, 0, [0, 1, 2, 3])]


def test_uneven_cells_are_named_one_by_one_in_the_reason():
    request = numa_request(3, 1536, {"hw:numa_nodes": "2", "hw:numa_cpus.0": "0-1", "hw:numa_mem.0": "1024",
                                     "hw:numa_cpus.1": "2", "hw:numa_mem.1": "512", "hw:mem_page_size": "2MB"})
    with pytest.raises(DoesNotFit) as refused:
        fit(request, [cell(0, range(2), pages=[(HUGE_KIB, 512)]), cell(1, range(2, 3), pages=[(HUGE_KIB, 100)])])
    assert str(refused.value) == (
        "needs 2 shared CPUs and 1024 MiB in 2048 KiB pages; 1 shared CPU and 512 MiB in 2048 KiB pages "
        "in 2 distinct cells; cell 0 has 2 CPUs and 7168 MiB free (pages free: 512 of 2048 KiB), "
        "cell 1 has 1 CPU and 7992 MiB free (pages free: 100 of 2048 KiB)")  # small pages: beside the pools


def test_a_cell_listed_twice_is_a_caller_bug():
    with pytest.raises(ValueError, match="listed twice"):
        fit(numa_request(1, 512, {}), [cell(0, range(2)), cell(0, range(2, 4))])


def test_without_a_split_shared_instances_float_over_unpinned_cpus_that_are_then_never_pinned():
    cells = [cell(0, range(4), pinned=[0])]
    pinned = fit(numa_request(1, 512, {"hw:cpu_policy": "dedicated"}), cells)
    assert pinned.cells[0].host_cpus == [1]
    shared = fit(numa_request(2, 512, {}), cells, [pinned])
    assert not shared.pinned and shared.cells[0].host_cpus == [2, 3]  # never over the pinned CPUs 0 and 1
    assert shared_cpus(cells[0], [pinned, shared]) == [2, 3]
    with pytest.raises(DoesNotFit, match="cell 0 has 0 CPUs"):   # 3 unpinned CPUs: 1 pinned, 2 shared vCPUs
        fit(numa_request(1, 512, {}), cells, [pinned, shared])
    # the other way round: a shared instance floats over CPUs 1-3, which a dedicated one then may not take
    first = fit(numa_request(1, 512, {}), cells)
    assert first.cells[0].host_cpus == [1, 2, 3]
    with pytest.raises(DoesNotFit, match="needs 1 dedicated CPU and 512 MiB in one cell; cell 0 has 0 CPUs"):
        fit(numa_request(1, 512, {"hw:cpu_policy": "dedicated"}), cells, [first])


def test_with_dedicated_cpus_pinned_vcpus_take_only_those_and_shared_ones_only_the_others():
    cells = [NumaCell(id=0, cpus=list(range(8)), memory_mib=8192, pinned_cpus=[5], dedicated_cpus=[4, 5, 6, 7])]
    shared = fit(numa_request(3, 512, {}), cells)
    assert shared.cells[0].host_cpus == [0, 1, 2, 3]           # the shared CPUs only
    pinned = fit(numa_request(2, 512, {"hw:cpu_policy": "dedicated"}), cells, [shared])
    assert pinned.cells[0].host_cpus == [4, 6]                 # dedicated ones, 5 being the host's
    assert fit(numa_request(1, 512, {}), cells, [shared, pinned]).cells[0].host_cpus == [0, 1, 2, 3]
    with pytest.raises(DoesNotFit, match="needs 2 dedicated CPUs and 512 MiB in one cell; cell 0 has 1 CPU"):
        fit(numa_request(2, 512, {"hw:cpu_policy": "dedicated"}), cells, [shared, pinned])
    with pytest.raises(DoesNotFit, match="needs 2 shared CPUs and 512 MiB in one cell; cell 0 has 1 CPU"):
        fit(numa_request(2, 512, {}), cells, [shared, pinned])  # 4 shared CPUs, 3 vCPUs on them
    (free,) = free_in_cells(cells, [shared, pinned])
    assert (free.cpus, free.pinnable_cpus) == (1, [7])
    with pytest.raises(DoesNotFit, match="cell 0 has 0 CPUs"):  # a cell with no dedicated CPUs pins nothing
        fit(numa_request(1, 512, {"hw:cpu_policy": "dedicated"}),
            [NumaCell(id=0, cpus=[0, 1], memory_mib=1024, dedicated_cpus=[])])


def test_a_shared_domain_made_from_its_placement_stays_on_its_cells_shared_cpus():
    cells = [NumaCell(id=0, cpus=list(range(4)), memory_mib=4096, dedicated_cpus=[2, 3]),
             NumaCell(id=1, cpus=list(range(4, 8)), memory_mib=4096, dedicated_cpus=[6, 7])]
    placement = fit(numa_request(2, 1024, {"hw:numa_nodes": "2"}), cells)
    spec = DomainSpec(name="vm", uuid="5f0c1d53-4a57-4c0f-9d42-0b6e3b8f7a11", vcpus=2, memory_mib=1024,
                      placement=placement)

    assert vcpu(spec).get("cpuset") == "0-1,4-5"
    assert [pin.get("cpuset") for pin in cputune(spec).iter("vcpupin")] == ["0-1", "4-5"]


def test_memory_counts_used_and_claimed():
    cells = [cell(0, range(4), 4096, used=1024)]
    first = fit(numa_request(1, 2048, {}), cells)
    with pytest.raises(DoesNotFit, match="1024 MiB free"):
        fit(numa_request(1, 2048, {}), cells, [first])
    assert fit(numa_request(1, 1024, {}), cells, [first]).memory_mib == 1024


def test_without_a_numa_spec_the_cell_with_most_free_memory_is_taken_ties_by_id():
    cells = [cell(2, range(8, 12), 4096), cell(0, range(4), 8192, used=4096), cell(1, range(4, 8), 6144)]
    assert fit(numa_request(1, 512, {}), cells).cells[0].host_cell == 1
    assert fit(numa_request(1, 512, {}), cells[:2]).cells[0].host_cell == 0


# -- huge pages ----------------------------------------------------------------------------------------------
def test_small_pages_fit_beside_the_cells_huge_page_pools_and_huge_pages_leave_small_memory_alone():
    cells = [cell(0, range(4), 8192, used=1024, pages=[(HUGE_KIB, 2048)])]   # 4096 MiB in the pool
    with pytest.raises(DoesNotFit, match="needs 1 shared CPU and 4096 MiB in one cell; cell 0 has 4 CPUs and "
                                         "3072 MiB free"):
        fit(numa_request(1, 4096, {}), cells)
    huge = fit(numa_request(1, 4096, {"hw:mem_page_size": "large"}), cells)
    assert huge.page_size_kib == HUGE_KIB
    small = fit(numa_request(1, 3072, {}), cells, [huge])   # the huge-page claim took no small memory
    assert small.page_size_kib is None
    (free,) = free_in_cells(cells, [huge, small])
    assert (free.memory_mib, free.hugepages) == (0, {HUGE_KIB: 0})


def test_an_explicit_page_size_needs_free_pages_of_that_size():
    cells = [cell(0, range(4), pages=[(HUGE_KIB, 512)]), cell(1, range(4, 8), 16384, pages=[(HUGE_KIB, 100)])]
    placement = fit(numa_request(2, 1024, {"hw:mem_page_size": "2MB"}), cells)
    assert placement.page_size_kib == HUGE_KIB and placement.cells[0].host_cell == 0   # cell 1 has too few
    with pytest.raises(DoesNotFit, match=r"in 2048 KiB pages in one cell; .*pages free: 0 of 2048 KiB"):
        fit(numa_request(2, 1024, {"hw:mem_page_size": "2048"}), cells, [placement])
    with pytest.raises(DoesNotFit, match="1048576 KiB pages"):
        fit(numa_request(2, 1024, {"hw:mem_page_size": "1GB"}), cells)


def test_large_takes_the_largest_size_that_fits_and_any_falls_back_to_small_pages():
    cells = [cell(0, range(4), 16384, pages=[(HUGE_KIB, 1024), (GIB_KIB, 4)])]
    assert fit(numa_request(1, 2048, {"hw:mem_page_size": "large"}), cells).page_size_kib == GIB_KIB
    # 1536 MiB is no whole number of 1 GiB pages: 2 MiB ones
    assert fit(numa_request(1, 1536, {"hw:mem_page_size": "large"}), cells).page_size_kib == HUGE_KIB
    big = fit(numa_request(1, 4096, {"hw:mem_page_size": "any"}), cells)
    assert big.page_size_kib == GIB_KIB
    assert fit(numa_request(1, 4096, {"hw:mem_page_size": "any"}), cells, [big]).page_size_kib is None
    with pytest.raises(DoesNotFit, match="in huge pages of one size"):
        fit(numa_request(1, 4096, {"hw:mem_page_size": "large"}), cells, [big])
    with pytest.raises(DoesNotFit):
        fit(numa_request(1, 512, {"hw:mem_page_size": "large"}), [cell(0, range(4))])


def test_free_figures_are_what_fit_counts_beside_the_claims():
    cells = [cell(1, range(4, 8), 8192, used=512, pinned=[7], pages=[(HUGE_KIB, 2048)]), cell(0, range(4), 8192)]
    pinned = fit(numa_request(2, 1024, {"hw:cpu_policy": "dedicated"}), cells)             # takes cell 0
    shared = fit(numa_request(1, 2048, {"hw:mem_page_size": "2048"}), cells, [pinned])  # huge pages: cell 1

    free = free_in_cells(cells, [pinned, shared])

    assert [(f.id, f.cpus, f.pinnable_cpus, f.memory_mib, f.hugepages) for f in free] == [
        (0, 2, [2, 3], 8192 - 1024, {}),
        # the shared claim floats over 4-6, so none is pinnable; its huge pages are not small-page memory
        (1, 2, [], 8192 - 4096 - 512, {HUGE_KIB: 2048 - 1024})]
    assert free_in_cells(cells, [])[1].cpus == 3


def test_free_figures_never_go_below_zero_when_the_host_shrank_under_its_claims():
    claim = fit(numa_request(4, 4096, {"hw:cpu_policy": "dedicated"}), [cell(0, range(4), 4096)])

    (free,) = free_in_cells([cell(0, range(2), 1024)], [claim])

    assert (free.cpus, free.pinnable_cpus, free.memory_mib) == (0, [], 0)


@pytest.mark.parametrize("key, read", [("hw:cpu_policy", True), ("hw:numa_nodes", True), ("hw:numa_cpus.3", True),
                                       ("hw:numa_mem.0", True), ("hw:mem_page_size", True),
                                       ("hw:pci_numa_affinity_policy", True), ("hw:cpu_thread_policy", False),
                                       ("pci_passthrough:pci_flavor", False)])
def test_the_specs_the_numa_request_reads(key, read):
    assert is_numa_spec(key) is read


def test_one_page_size_for_all_cells_of_an_instance():
    cells = [cell(0, range(4), pages=[(GIB_KIB, 2)]), cell(1, range(4, 8), pages=[(HUGE_KIB, 1024)])]
    request = numa_request(2, 2048, {"hw:numa_nodes": "2", "hw:mem_page_size": "large"})
    with pytest.raises(DoesNotFit):   # 1 GiB pages only in cell 0, 2 MiB only in cell 1
        fit(request, cells)
    both = [cell(0, range(4), pages=[(GIB_KIB, 2), (HUGE_KIB, 512)]), cell(1, range(4, 8), pages=[(HUGE_KIB, 512)])]
    assert fit(request, both).page_size_kib == HUGE_KIB


# -- PCI NUMA affinity ----------------------------------------------------------------------------------------
def test_required_puts_the_instance_on_its_devices_cell_or_refuses():
    cells = [cell(0, range(4), 4096), cell(1, range(4, 8), 16384)]
    request = numa_request(2, 1024, {"hw:pci_numa_affinity_policy": "required"})
    assert fit(request, cells, device_cells={0}).cells[0].host_cell == 0
    full = [cell(0, range(4), 4096, pinned=range(4)), cells[1]]
    with pytest.raises(DoesNotFit, match=r"\(hw:pci_numa_affinity_policy=required: "
                                         r"its PCI devices are on cell 0, it must be on them\)"):
        fit(request, full, device_cells={0})
    with pytest.raises(DoesNotFit):                       # devices on two cells: no one cell holds them all
        fit(request, cells, device_cells={0, 1})
    with pytest.raises(DoesNotFit):                       # a cell the host does not offer
        fit(request, cells, device_cells={5})


def test_legacy_is_required_for_devices_that_report_a_cell():
    full = [cell(0, range(4), pinned=range(4)), cell(1, range(4, 8))]
    with pytest.raises(DoesNotFit):
        fit(numa_request(1, 512, {}), full, device_cells={0})
    assert fit(numa_request(1, 512, {}), full, device_cells=set()).cells[0].host_cell == 1


def test_preferred_takes_the_devices_cell_if_it_fits_else_another():
    cells = [cell(0, range(4), 4096), cell(1, range(4, 8), 16384)]
    request = numa_request(2, 1024, {"hw:pci_numa_affinity_policy": "preferred"})
    assert fit(request, cells, device_cells={0}).cells[0].host_cell == 0
    full = [cell(0, range(4), 4096, pinned=range(4)), cells[1]]
    assert fit(request, full, device_cells={0}).cells[0].host_cell == 1


def test_required_with_two_cells_covers_both_device_cells():
    cells = [cell(i, range(4 * i, 4 * i + 4), 4096 * (i + 1)) for i in range(4)]
    spread = numa_request(2, 1024, {"hw:numa_nodes": "2", "hw:pci_numa_affinity_policy": "required"})
    assert sorted(c.host_cell for c in fit(spread, cells, device_cells={0, 1}).cells) == [0, 1]
    assert sorted(c.host_cell for c in fit(spread, cells, device_cells={0}).cells) == [0, 3]
    with pytest.raises(DoesNotFit):
        fit(spread, cells, device_cells={0, 1, 2})


def test_required_devices_cells_are_matched_to_guest_cells_they_can_hold():
    # Devices on cells 0 and 1; the small guest cell 0 would take cell 0 first, leaving cell 1 (2 CPUs)
    # nothing it can hold: the guest cells are swapped.
    cells = [cell(0, range(6), 16384), cell(1, range(6, 8), 8192), cell(2, range(8, 16), 32768)]
    request = numa_request(5, 2048, {"hw:numa_nodes": "2", "hw:numa_cpus.0": "0", "hw:numa_mem.0": "1024",
                                     "hw:numa_cpus.1": "1-4", "hw:numa_mem.1": "1024",
                                     "hw:cpu_policy": "dedicated", "hw:pci_numa_affinity_policy": "required"})
    placement = fit(request, cells, device_cells={0, 1})
    assert [(c.guest_cell, c.host_cell) for c in placement.cells] == [(0, 1), (1, 0)]
    assert [(c.guest_cell, c.host_cell) for c in fit(request, cells).cells] == [(0, 2), (1, 0)]


def test_socket_needs_the_cells_sockets_and_keeps_to_the_devices_socket():
    cells = [cell(i, range(4 * i, 4 * i + 4), 4096 * (i + 1)) for i in range(4)]
    request = numa_request(1, 512, {"hw:pci_numa_affinity_policy": "socket"})
    sockets = {0: 0, 1: 0, 2: 1, 3: 1}
    assert fit(request, cells).cells[0].host_cell == 3             # no devices: nothing asked
    with pytest.raises(DoesNotFit, match="which socket each cell is on"):
        fit(request, cells, device_cells={0})
    full0 = [cell(0, range(4), pinned=range(4)), *cells[1:]]
    assert fit(request, full0, device_cells={0}, sockets=sockets).cells[0].host_cell == 1


def test_affine_cells_filters_or_orders_one_cell_candidates():
    assert affine_cells("required", [0, 1, 2], {1}) == [1]
    assert affine_cells("legacy", [0, 1, 2], {1, 2}) == []
    assert affine_cells("preferred", [0, 1, 2], {2}) == [2, 0, 1]
    assert affine_cells("required", [0, 1, 2], set()) == [0, 1, 2]
    assert affine_cells("socket", [0, 1, 2, 3], {0}, {0: 0, 1: 0, 2: 1, 3: 1}) == [0, 1]
    assert affine_cells("socket", [0, 1, 2, 3], {0, 2}, {0: 0, 1: 0, 2: 1, 3: 1}) == []
    assert affine_cells("socket", [0, 1], {0}) == []


# -- pinning never overlaps --------------------------------------------------------------------------------
@st.composite
def hosts(draw):
    cells, first = [], 0
    for cell_id in range(draw(st.integers(1, 4))):
        cpus = list(range(first, first + draw(st.integers(0, 8))))
        first += len(cpus) + draw(st.integers(0, 2))
        memory = draw(st.integers(0, 16384))
        sizes = draw(st.lists(st.sampled_from([HUGE_KIB, GIB_KIB]), unique=True, max_size=2))
        totals = [draw(st.integers(0, memory * 1024 // size // 2)) for size in sizes]  # the pools fit the memory
        pool = sum(n * size for n, size in zip(totals, sizes)) // 1024
        split = draw(st.one_of(st.none(), st.lists(st.sampled_from(cpus), unique=True) if cpus else st.just([])))
        cells.append(NumaCell(id=cell_id, cpus=cpus, memory_mib=memory,
                              used_memory_mib=draw(st.integers(0, memory - pool)),
                              pinned_cpus=draw(st.lists(st.sampled_from(cpus), unique=True)) if cpus else [],
                              dedicated_cpus=split,
                              hugepages=[HugePages(size_kib=s, total=n, free=draw(st.integers(0, n)))
                                         for s, n in zip(sizes, totals)]))
    return cells


@st.composite
def requests(draw):
    nodes = draw(st.sampled_from([None, 1, 2]))
    per = draw(st.integers(1, 3))
    cells = nodes or 1
    specs = {"hw:cpu_policy": draw(st.sampled_from(["dedicated", "dedicated", "shared"])),
             "hw:mem_page_size": draw(st.sampled_from(["small", "large", "any", "2MB", "1GB"]))}
    if nodes:
        specs["hw:numa_nodes"] = str(nodes)
    return numa_request(per * cells, cells * draw(st.sampled_from([256, 512, 1024, 2048])), specs)


def check_host(cells: list[NumaCell], claims: list[NumaPlacement]) -> None:
    by_id = {c.id: c for c in cells}
    pinned = [cpu for p in claims if p.pinned for part in p.cells for cpu in part.host_cpus]
    assert len(pinned) == len(set(pinned)), "a host CPU is pinned twice"
    for p in claims:
        assert len({part.host_cell for part in p.cells}) == len(p.cells)
        for part in p.cells:
            host = by_id[part.host_cell]
            assert set(part.host_cpus) <= set(host.cpus) - set(host.pinned_cpus)
            if host.dedicated_cpus is not None:  # split: each kind on its own CPUs
                assert (set(part.host_cpus) <= set(host.dedicated_cpus)) if p.pinned else \
                    not set(part.host_cpus) & set(host.dedicated_cpus)
            if not p.pinned:
                assert not set(part.host_cpus) & set(pinned), "a shared claim floats over a pinned CPU"
    for c in cells:
        parts = [(p, part) for p in claims for part in p.cells if part.host_cell == c.id]
        assert c.memory_mib - c.hugepage_mib - c.used_memory_mib - sum(
            part.memory_mib for p, part in parts if p.page_size_kib is None) >= 0
        unpinned = set(c.shared_cpus) - set(c.pinned_cpus) - set(pinned)
        assert len(unpinned) - sum(len(part.vcpus) for p, part in parts if not p.pinned) >= 0
        used_pages = Counter()
        for p, part in parts:
            if p.page_size_kib:
                assert part.memory_mib * 1024 % p.page_size_kib == 0
                used_pages[p.page_size_kib] += part.memory_mib * 1024 // p.page_size_kib
        free = {hp.size_kib: hp.free for hp in c.hugepages}
        assert all(free.get(size, 0) >= n for size, n in used_pages.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=hosts(), wanted=st.lists(requests(), min_size=1, max_size=12))
def test_random_requests_never_pin_a_cpu_twice_nor_overdraw_memory_or_pages(cells, wanted):
    claims: list[NumaPlacement] = []
    for request in wanted:
        try:
            placement = fit(request, cells, claims)
        except DoesNotFit as refused:
            assert str(refused).startswith("needs ") and "cell" in str(refused)
            continue
        assert placement == fit(request, cells, list(claims)), "the same inputs give the same placement"
        assert placement.vcpus == request.vcpus and placement.memory_mib == request.ram
        assert placement.pinned == request.dedicated and len(placement.cells) == len(request.cells)
        claims.append(placement)
        check_host(cells, claims)


def fits_by_hand(request, cells, device_cells, policy, sizes=None):
    """Every way of giving the guest cells distinct host cells, tried one by one (small hosts only)."""
    sizes = sizes or {"small": [None], "large": [GIB_KIB, HUGE_KIB], "any": [GIB_KIB, HUGE_KIB, None]}.get(
        request.page_size, [request.page_size])
    for size in sizes:
        for chosen in permutations(cells, len(request.cells)):
            ids = {c.id for c in chosen}
            if policy in ("required", "legacy") and not device_cells <= ids:
                continue
            if all(len(set(host.cpus if host.dedicated_cpus is None else host.dedicated_cpus)
                       - set(host.pinned_cpus)) >= len(need.vcpus)
                   and (size is not None or host.memory_mib - host.hugepage_mib - host.used_memory_mib
                        >= need.memory_mib)
                   and (size is None or (need.memory_mib * 1024 % size == 0 and
                                         {hp.size_kib: hp.free for hp in host.hugepages}.get(size, 0)
                                         >= need.memory_mib * 1024 // size))
                   for need, host in zip(request.cells, chosen)):
                return True
    return False


@st.composite
def uneven_requests(draw):
    nodes = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4)) for _ in range(nodes)]
    mems = [draw(st.sampled_from([512, 1024, 2048, 4096])) for _ in range(nodes)]
    specs = {"hw:numa_nodes": str(nodes), "hw:cpu_policy": "dedicated",
             "hw:mem_page_size": draw(st.sampled_from(["small", "large", "any", "2048"])),
             "hw:pci_numa_affinity_policy": draw(st.sampled_from(["required", "legacy", "preferred"]))}
    first = 0
    for i, (n, m) in enumerate(zip(sizes, mems)):
        specs[f"hw:numa_cpus.{i}"], specs[f"hw:numa_mem.{i}"] = f"{first}-{first + n - 1}", str(m)
        first += n
    return numa_request(sum(sizes), sum(mems), specs)


@settings(max_examples=400, deadline=None)
@given(cells=hosts(), request=uneven_requests(), devices=st.sets(st.integers(0, 4), max_size=2))
def test_fit_finds_a_placement_whenever_one_exists(cells, request, devices):
    try:
        placement = fit(request, cells, device_cells=devices)
    except DoesNotFit:
        assert not fits_by_hand(request, cells, devices, request.pci_policy)
        return
    assert fits_by_hand(request, cells, devices, request.pci_policy)
    chosen = {part.host_cell for part in placement.cells}
    if request.pci_policy != "preferred":
        assert devices <= chosen
    elif fits_by_hand(request, cells, devices, "required", [placement.page_size_kib]):
        assert devices <= chosen, "preferred takes the devices' cells when they fit (with the page size chosen)"
