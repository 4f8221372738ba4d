"""Choosing devices for all of an instance's requests at once."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from dpustack.pci.claims import Need, allocate
from dpustack.pci.device import PciDevice

PF = PciDevice(address="0000:03:00.0", vendor_id="15b3", product_id="a2d6", dev_type="type-PF", numa_node=0)
VFS = [PciDevice(address=f"0000:03:00.{i}", vendor_id="15b3", product_id="101e", dev_type="type-VF",
                 parent_addr=PF.address, numa_node=0) for i in range(1, 5)]
GPU_N1 = PciDevice(address="0000:81:00.0", vendor_id="8086", product_id="0001", numa_node=1)
GPU_NONE = PciDevice(address="0000:82:00.0", vendor_id="8086", product_id="0002")
ALL = [PF, *VFS, GPU_N1, GPU_NONE]
MELLANOX = ({"vendor_id": "15b3"},)
GPUS = ({"vendor_id": "8086", "product_id": "000[1-2]"},)
THE_PF = ({"product_id": "a2d6", "dev_type": "type-PF"},)


def test_one_device_never_counts_for_two_requests():
    chosen = allocate(ALL, [Need(1, GPUS), Need(1, ({"product_id": "0001"},))])
    assert chosen == [["0000:82:00.0"], ["0000:81:00.0"]]
    assert allocate(ALL, [Need(2, ({"product_id": "0001"},))]) is None


def test_a_pf_and_its_own_vfs_are_never_taken_together():
    assert allocate(ALL, [Need(1, THE_PF), Need(1, MELLANOX)]) is None
    assert allocate(ALL, [Need(5, ({"vendor_id": "15b3", "dev_type": "*"},))]) is None
    assert allocate(ALL, [Need(4, MELLANOX)]) == [[v.address for v in VFS]]
    assert allocate(ALL, [Need(1, THE_PF)]) == [[PF.address]]
    assert allocate(ALL, [Need(1, ({"vendor_id": "15b3", "dev_type": "*"},))]) == [[VFS[0].address]]  # VFs first


def test_numa_policies():
    needs = [Need(1, MELLANOX), Need(1, GPUS)]
    assert allocate(ALL, needs, "required") is None                    # the GPUs are not on node 0
    assert allocate(ALL, needs, "legacy") == [[VFS[0].address], [GPU_NONE.address]]  # no NUMA info may join
    assert allocate(ALL, [Need(2, GPUS)], "required") is None
    assert allocate(ALL, [Need(2, GPUS)], "legacy") == [[GPU_N1.address, GPU_NONE.address]]
    split = [Need(1, ({"product_id": "0001"},)), Need(1, ({"product_id": "101e"},))]
    assert allocate(ALL, split, "legacy") is None                       # node 1 and node 0
    assert allocate(ALL, split, "preferred") == [[GPU_N1.address], [VFS[0].address]]


def test_no_needs_is_trivially_met():
    assert allocate(ALL, []) == []


def test_a_request_gets_a_pf_only_when_its_dev_type_allows_one():
    # Some NICs give their VFs the PF's own ids: a request for the ids must not take the PF.
    pf = PciDevice("0000:3b:00.0", "8086", "10ed", dev_type="type-PF")
    vf = PciDevice("0000:3b:10.0", "8086", "10ed", dev_type="type-VF", parent_addr=pf.address)
    ids = {"vendor_id": "8086", "product_id": "10ed"}

    assert allocate([pf, vf], [Need(1, (ids,))]) == [[vf.address]]
    assert allocate([pf, vf], [Need(2, (ids,))]) is None
    assert allocate([pf], [Need(1, (ids,))]) is None
    assert allocate([pf], [Need(1, ({**ids, "dev_type": "type-PF"},))]) == [[pf.address]]
    assert allocate([pf], [Need(1, ({**ids, "dev_type": "type-(PF|VF)"},))]) == [[pf.address]]


def test_a_request_that_does_not_ask_for_remote_managed_never_gets_a_dpu_vf():
    dpu_vf = PciDevice("0000:05:00.3", "15b3", "101e", dev_type="type-VF", extra_info={"remote_managed": "true"})
    host_vf = PciDevice("0000:05:00.4", "15b3", "101e", dev_type="type-VF")

    assert allocate([dpu_vf, host_vf], [Need(1, MELLANOX)]) == [[host_vf.address]]
    assert allocate([dpu_vf], [Need(1, MELLANOX)]) is None
    assert allocate([dpu_vf], [Need(1, ({"vendor_id": "15b3", "remote_managed": "True"},))]) == [[dpu_vf.address]]
    assert allocate([dpu_vf, host_vf], [Need(1, ({"remote_managed": "false"},))]) == [[host_vf.address]]
    assert allocate([dpu_vf, host_vf], [Need(2, ({"remote_managed": "*"},))]) == [[dpu_vf.address, host_vf.address]]


def _host(families: int, vfs: int = 2) -> list[PciDevice]:
    devices = []
    for index in range(families):
        pf = PciDevice(f"0000:{0x10 + index:02x}:00.0", "15b3", "a2d6", dev_type="type-PF")
        devices.append(pf)
        devices += [PciDevice(f"0000:{0x10 + index:02x}:00.{1 + n}", "15b3", "101e", dev_type="type-VF",
                              parent_addr=pf.address) for n in range(vfs)]
    return devices


def test_one_pf_and_two_vfs_on_a_host_with_many_pf_families():
    needs = [Need(1, ({"dev_type": "type-PF"},)), Need(2, ({"dev_type": "type-VF"},))]
    for families in (2, 9, 16, 40):
        (pfs, vfs) = allocate(_host(families), needs)
        assert len(pfs) == 1 and len(vfs) == 2 and not {f"{pf[:-1]}{n}" for pf in pfs for n in "12"} & set(vfs)


def test_claims_stay_exact_and_quick_when_pfs_and_vfs_compete_on_a_big_host():
    needs = [Need(20, ({"dev_type": "type-PF"},)), Need(40, ({"dev_type": "type-VF"},))]
    assert allocate(_host(40), needs) is not None       # 20 families give their PF, 20 their two VFs
    assert allocate(_host(40), [Need(21, needs[0].specs), needs[1]]) is None   # one family short
    assert allocate(_host(40, vfs=1), [Need(20, needs[0].specs), Need(21, needs[1].specs)]) is None


# -- the search against a brute force, on small random inventories ------------------------------------
SPECS = [{"dev_type": "type-PF"}, {"dev_type": "type-VF"}, {"product_id": "000a"}, {"product_id": "000b"},
         {"product_id": "000a", "dev_type": "*"}, {"vendor_id": "8086", "dev_type": "type-(PF|PCI)"},
         {"remote_managed": "true"}, {"remote_managed": "*", "dev_type": ".*"}]


@st.composite
def inventories(draw):
    """Up to 4 PF families built from at most 2 templates (so identical families are common), plus devices."""
    product = st.sampled_from(["000a", "000b"])
    templates = draw(st.lists(st.tuples(product, st.lists(st.tuples(product, st.booleans()), max_size=2)),
                              min_size=1, max_size=2))
    devices = []
    for family in range(draw(st.integers(0, 4))):
        pf_product, vfs = templates[draw(st.integers(0, len(templates) - 1))]
        pf = PciDevice(f"0000:{family + 1:02x}:00.0", "8086", pf_product, dev_type="type-PF")
        devices.append(pf)
        devices += [PciDevice(f"0000:{family + 1:02x}:00.{n + 1}", "8086", vf_product, dev_type="type-VF",
                              parent_addr=pf.address, extra_info={"remote_managed": "true"} if remote else {})
                    for n, (vf_product, remote) in enumerate(vfs)]
    devices += [PciDevice(f"0000:a0:00.{n}", "8086", draw(product)) for n in range(draw(st.integers(0, 2)))]
    needs = [Need(draw(st.integers(1, 4)), tuple(draw(st.lists(st.sampled_from(SPECS), min_size=1, max_size=2))))
             for _ in range(draw(st.integers(1, 3)))]
    return devices, needs


def _feasible(devices, needs) -> bool:
    """Every way of giving devices to needs, one by one: the answer the search must agree with."""
    @functools.cache
    def go(index, left, pfs_taken, vf_parents):
        if not any(left):
            return True
        if index == len(devices) or sum(left) > len(devices) - index:
            return False
        device = devices[index]
        if go(index + 1, left, pfs_taken, vf_parents):
            return True
        for n, need in enumerate(needs):
            if not left[n] or not need.accepts(device):
                continue
            if device.address in vf_parents or device.parent_addr in pfs_taken:
                continue
            rest = left[:n] + (left[n] - 1,) + left[n + 1:]
            pf = {device.address} if device.dev_type == "type-PF" else set()
            parents = {device.parent_addr} if device.parent_addr else set()
            if go(index + 1, rest, pfs_taken | pf, vf_parents | parents):
                return True
        return False
    return go(0, tuple(n.count for n in needs), frozenset(), frozenset())


@settings(max_examples=400, deadline=None)
@given(inventories())
def test_the_search_finds_an_answer_exactly_when_one_exists(inventory):
    devices, needs = inventory
    chosen = allocate(devices, needs)

    assert (chosen is not None) == _feasible(devices, needs)
    if chosen is not None:
        by_address = {d.address: d for d in devices}
        taken = [a for addresses in chosen for a in addresses]
        assert len(taken) == len(set(taken))
        assert [len(addresses) for addresses in chosen] == [n.count for n in needs]
        assert all(need.accepts(by_address[a]) for need, addresses in zip(needs, chosen) for a in addresses)
        assert not {by_address[a].parent_addr for a in taken} & set(taken)  # never a PF with its own VF
