"""Choosing devices for all of an instance's requests at once."""

from __future__ import annotations

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


def test_one_device_never_counts_for_two_requests():
    chosen = allocate(ALL, [Need(1, GPUS), Need(1, ({"product_id": "0001"},))])
    assert chosen == [["0000:82:00.0"], ["0000:81:00.0"]]
    assert allocate(ALL, [Need(2, ({"product_id": "0001"},))]) is None


def test_a_pf_and_its_own_vfs_are_never_taken_together():
    assert allocate(ALL, [Need(1, ({"product_id": "a2d6"},)), Need(1, MELLANOX)]) is None
    assert allocate(ALL, [Need(5, MELLANOX)]) is None
    assert allocate(ALL, [Need(4, MELLANOX)]) == [[v.address for v in VFS]]  # VFs first, the PF stays whole
    assert allocate(ALL, [Need(1, ({"product_id": "a2d6"},))]) == [[PF.address]]


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
