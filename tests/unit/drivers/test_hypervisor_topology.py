"""The rules that turn a host's cells and its domains' usage into the NUMA cells it offers (docs/vm.md)."""

from __future__ import annotations

import pytest

from dpustack.drivers.hypervisor.topology import (DomainUsage, HostCell, HostCpu, MemoryPart, format_cpu_list,
                                                  offered_cells, parse_cpu_list)
from dpustack.errors import DriverError

MIB = 1024  # KiB


def cell(id: int, cpus: list[int], memory_mib: int, pages: dict[int, int] | None = None) -> HostCell:
    return HostCell(id=id, memory_kib=memory_mib * MIB, cpus=tuple(HostCpu(cpu, frozenset({cpu})) for cpu in cpus),
                    pages=pages if pages is not None else {4: memory_mib * 256})


def guest(name: str, *parts: tuple[int, set[int]], pinned: set[int] = frozenset(),
          page_kib: int | None = None) -> DomainUsage:
    return DomainUsage(name=name, uuid=f"uuid-of-{name}",
                       memory=tuple(MemoryPart(kib, frozenset(cells), page_kib) for kib, cells in parts),
                       pinned_cpus=frozenset(pinned))


HOST = [cell(0, [0, 1, 2, 3], 8192), cell(1, [4, 5, 6, 7], 8192)]


# ------------------------------------------------------------------ CPU lists
@pytest.mark.parametrize("text, cpus", [
    ("", set()),
    ("  ", set()),
    ("3", {3}),
    ("0-1,8", {0, 1, 8}),
    ("0-3, 8-9", {0, 1, 2, 3, 8, 9}),
    ("0-7,^2,^4-5", {0, 1, 3, 6, 7}),
])
def test_a_cpu_list_is_ranges_and_ids_with_exclusions(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["0-", "a", "3-1", "1,,2", "-1", "0-65536", "1;2"])
def test_what_is_no_cpu_list_is_refused(text):
    with pytest.raises(ValueError, match=f"^{text!r} is not a CPU list like '0-1,8'"):
        parse_cpu_list(text)


def test_a_cpu_set_is_written_as_ranges():
    assert format_cpu_list({8, 0, 1, 2, 5, 6}) == "0-2,5-6,8"
    assert format_cpu_list([]) == ""


# ------------------------------------------------------------------ reservation
def test_reserved_cpus_are_left_out_of_their_cells():
    offered = offered_cells(HOST, {}, [], reserved_cpus="0,4-5")

    assert [c.cpus for c in offered] == [[1, 2, 3], [6, 7]]


def test_a_reserved_cpu_the_host_does_not_have_is_an_error_naming_the_option():
    with pytest.raises(DriverError) as caught:
        offered_cells(HOST, {}, [], reserved_cpus="0,8-9")

    assert caught.value.field == "reserved_cpus"
    assert caught.value.message == "reserved_cpus: the host has no CPU 8-9 (its CPUs are 0-7)"


def test_a_bad_reserved_cpus_is_an_error_naming_the_option():
    with pytest.raises(DriverError, match="^reserved_cpus: '0-x' is not a CPU list"):
        offered_cells(HOST, {}, [], reserved_cpus="0-x")


def test_reserved_memory_comes_out_of_cell_0_first_then_the_next():
    assert [c.memory_mib for c in offered_cells(HOST, {}, [], reserved_memory_mib=1024)] == [7168, 8192]
    assert [c.memory_mib for c in offered_cells(HOST, {}, [], reserved_memory_mib=10240)] == [0, 6144]
    assert [c.memory_mib for c in offered_cells(HOST, {}, [], reserved_memory_mib=16384)] == [0, 0]


def test_more_reserved_memory_than_the_host_has_is_an_error_naming_the_option():
    with pytest.raises(DriverError) as caught:
        offered_cells(HOST, {}, [], reserved_memory_mib=16385)

    assert caught.value.field == "reserved_memory_mib"
    assert caught.value.message == "reserved_memory_mib: 16385 MiB is more than the host's 16384 MiB"


def test_a_cell_memory_that_is_no_whole_mib_offers_the_whole_mib_below():
    odd = HostCell(id=0, memory_kib=8192 * MIB + 1023, cpus=(HostCpu(0, frozenset({0})),), pages={4: 1})

    assert offered_cells([odd], {}, [])[0].memory_mib == 8192


# ------------------------------------------------------------------ what domains use
def test_memory_bound_to_a_cell_counts_there_and_unbound_memory_on_cell_0():
    offered = offered_cells(HOST, {}, [guest("bound", (512 * MIB, {1})), guest("unbound", (256 * MIB, set()))])

    assert [c.used_memory_mib for c in offered] == [256, 512]


def test_memory_bound_to_several_cells_is_split_evenly_the_odd_kib_on_the_first():
    offered = offered_cells(HOST, {}, [guest("spread", (1024 * MIB + 1, {0, 1}))])

    assert [c.used_memory_mib for c in offered] == [513, 512]  # 524289 KiB rounds up to 513 MiB


def test_memory_bound_only_to_cells_the_host_lacks_counts_on_its_lowest_cell():
    offered = offered_cells(HOST, {}, [guest("elsewhere", (64 * MIB, {3}))])

    assert [c.used_memory_mib for c in offered] == [64, 0]


def test_the_guests_memory_adds_up_per_cell_and_rounds_up_to_a_mib():
    offered = offered_cells(HOST, {}, [guest("a", (100, {1})), guest("b", (100, {1}))])

    assert [c.used_memory_mib for c in offered] == [0, 1]


def test_pinned_cpus_are_reported_in_their_cells_but_never_a_reserved_one():
    offered = offered_cells(HOST, {}, [guest("a", (MIB, set()), pinned={0, 2}), guest("b", (MIB, set()), pinned={2, 6})],
                            reserved_cpus="0")

    assert [c.pinned_cpus for c in offered] == [[2], [6]]


def test_huge_pages_are_every_size_but_the_base_one_with_free_counts_as_the_host_gives_them():
    host = [cell(0, [0], 4096, pages={4: 786432, 2048: 512, 1048576: 0}), cell(1, [1], 4096, pages={4: 1048576})]

    offered = offered_cells(host, {0: {2048: 100}}, [])

    assert [(p.size_kib, p.total, p.free) for p in offered[0].hugepages] == [(2048, 512, 100), (1048576, 0, 0)]
    assert offered[1].hugepages == []


def test_cells_come_by_id_and_a_host_without_cells_is_an_error():
    assert [c.id for c in offered_cells(list(reversed(HOST)), {}, [])] == [0, 1]
    with pytest.raises(DriverError, match="the host reports no NUMA cell"):
        offered_cells([], {}, [])


def test_huge_page_backed_memory_is_not_used_memory_and_the_own_instances_pages_are_given_back():
    host = [cell(0, [0, 1], 8192, pages={4: 1048576, 2048: 2048}), cell(1, [2, 3], 8192, pages={4: 2097152})]
    other = guest("other", (1024 * MIB, {0}), page_kib=2048)    # 512 pages the host counts as taken
    own = guest("own", (512 * MIB, {0}), page_kib=2048)         # 256 more, which the claims count
    small = guest("small", (256 * MIB, {0}))

    (cell0, cell1) = offered_cells(host, {0: {2048: 2048 - 512 - 256}}, [other, small], own=[own])

    assert cell0.used_memory_mib == 256                  # only small-page memory is "used"
    assert (cell0.hugepages[0].total, cell0.hugepages[0].free) == (2048, 2048 - 512)
    assert cell1.used_memory_mib == 0


def test_the_own_instances_pages_never_make_more_free_than_the_total():
    host = [cell(0, [0], 4096, pages={4: 524288, 2048: 100})]
    own = guest("own", (512 * MIB, {0}), page_kib=2048)

    (offered,) = offered_cells(host, {0: {2048: 90}}, [], own=[own])

    assert offered.hugepages[0].free == 100


def test_dedicated_cpus_are_each_cells_share_and_without_them_there_is_no_split():
    offered = offered_cells(HOST, {}, [], reserved_cpus="0", dedicated_cpus="2-3,6-7")

    assert [(c.cpus, c.dedicated_cpus, c.shared_cpus) for c in offered] == [
        ([1, 2, 3], [2, 3], [1]), ([4, 5, 6, 7], [6, 7], [4, 5])]
    assert [c.dedicated_cpus for c in offered_cells(HOST, {}, [])] == [None, None]


@pytest.mark.parametrize("dedicated, message", [
    ("9", "dedicated_cpus: the host has no CPU 9 (its CPUs are 0-7)"),
    ("0-1", "dedicated_cpus: CPU 0 is reserved for the host (reserved_cpus)"),
    ("1-", "dedicated_cpus: '1-' is not a CPU list"),
])
def test_dedicated_cpus_the_host_cannot_give_are_an_error_naming_the_option(dedicated, message):
    with pytest.raises(DriverError) as caught:
        offered_cells(HOST, {}, [], reserved_cpus="0", dedicated_cpus=dedicated)

    assert caught.value.field == "dedicated_cpus" and caught.value.message.startswith(message)
