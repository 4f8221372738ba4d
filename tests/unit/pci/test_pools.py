"""Pools (seed 003 use cases) on generated sysfs trees: discover, filter, group by pci_flavor_attrs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpustack.drivers.inventory.sysfs import SysfsInventoryDriver
from dpustack.lab import pcitrees
from dpustack.pci.device import PciDevice
from dpustack.pci.pools import group_pools, pool_key
from dpustack.pci.specs import compile_pattern, parse_information, select

GPUS = [pcitrees.gpu("0000:af:00.0", "0001"), pcitrees.gpu("0000:b0:00.0", "0002")]


def pools_of(tmp_path: Path, cards, information, attrs):
    """What a node with these cards and this [pci] config reports as pools (summaries)."""
    pcitrees.write_tree(tmp_path / "sys", cards)
    devices = SysfsInventoryDriver(tmp_path / "sys").devices()
    offered = select(devices, parse_information(information)).devices
    return [pool.summary() for pool in group_pools(offered, attrs)]


def test_general_passthrough_one_gpu_one_pool(tmp_path):
    pools = pools_of(tmp_path, GPUS[:1], [{"match": {"vendor_id": "8086", "product_id": "0001"}}],
                     ["vendor_id", "product_id"])

    assert pools == [{"attrs": {"vendor_id": "8086", "product_id": "0001"}, "numa_node": 1,
                      "dev_type": "type-PCI", "remote_managed": False, "count": 1}]


def test_multi_candidate_two_gpu_models_two_pools(tmp_path):
    pools = pools_of(tmp_path, GPUS, [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}}],
                     ["vendor_id", "product_id"])

    assert [(p["attrs"], p["count"]) for p in pools] == [
        ({"vendor_id": "8086", "product_id": "0001"}, 1), ({"vendor_id": "8086", "product_id": "0002"}, 1)]


def test_a_wildcard_flavor_selects_both_gpu_pools(tmp_path):
    pools = pools_of(tmp_path, GPUS, [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}}],
                     ["vendor_id", "product_id"])
    wildcard = compile_pattern("000[1-2]", "product_id")

    assert sum(p["count"] for p in pools if wildcard.fullmatch(p["attrs"]["product_id"])) == 2


def test_a_grouping_tag_puts_both_gpus_in_one_pool(tmp_path):
    pools = pools_of(tmp_path, GPUS, [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"},
                                       "extra": {"e.group": "gpu"}}], ["e.group"])

    assert pools == [{"attrs": {"e.group": "gpu"}, "numa_node": 1, "dev_type": "type-PCI",
                      "remote_managed": False, "count": 2}]


def test_nics_tagged_with_a_physical_network_pool_by_it(tmp_path):
    pools = pools_of(tmp_path, [pcitrees.intel_x710(num_vfs=5)],
                     [{"match": {"vendor_id": "8086", "product_id": "154c"}, "extra": {"physical_network": "X"}}],
                     ["physical_network"])

    assert pools == [{"attrs": {"physical_network": "X"}, "numa_node": 0, "dev_type": "type-VF",
                      "remote_managed": False, "count": 5}]


def test_encryption_cards_make_three_qaclass_pools_and_a_flavor_picks_classes_1_and_3(tmp_path):
    information = [{"match": {"vendor_id": "177d", "product_id": "0xa"}, "extra": {"e.QAclass": "1"}},
                   {"match": {"vendor_id": "177d", "product_id": "0xb"}, "extra": {"e.QAclass": "2"}},
                   {"match": {"vendor_id": "19e5", "product_id": "0xb"}, "extra": {"e.QAclass": "3"}}]

    pools = pools_of(tmp_path, pcitrees.encryption_cards(), information, ["e.QAclass"])

    assert [(p["attrs"], p["count"]) for p in pools] == [
        ({"e.QAclass": "1"}, 1), ({"e.QAclass": "2"}, 1), ({"e.QAclass": "3"}, 1)]
    qa13 = compile_pattern("(1|3)", "e.QAclass")
    assert [p["attrs"]["e.QAclass"] for p in pools if qa13.fullmatch(p["attrs"]["e.QAclass"])] == ["1", "3"]


def test_default_attrs_group_a_bluefield_by_ids_and_extras_and_every_device_is_in_one_pool(tmp_path):
    cards = [pcitrees.bluefield2("MT2146X00001"), pcitrees.intel_x710(), *GPUS]
    information = [{"match": {"vendor_id": "15b3", "product_id": "101e"},
                    "extra": {"physical_network": "physnet1", "remote_managed": "true"}},
                   {"match": {"vendor_id": "8086"}}]
    pcitrees.write_tree(tmp_path / "sys", cards)
    offered = select(SysfsInventoryDriver(tmp_path / "sys").devices(), parse_information(information)).devices

    pools = group_pools(offered, ["vendor_id", "product_id", "extra_info"])

    assert sorted(a for p in pools for a in p.addresses) == sorted(d.address for d in offered)
    summaries = [(p.attrs, p.dev_type, p.numa_node, p.remote_managed, p.count) for p in pools]
    assert summaries == [
        ({"vendor_id": "15b3", "product_id": "101e", "physical_network": "physnet1", "remote_managed": "true"},
         "type-VF", 0, True, 8),
        ({"vendor_id": "8086", "product_id": "1572", "remote_managed": "false"}, "type-PF", 0, False, 1),
        ({"vendor_id": "8086", "product_id": "154c", "remote_managed": "false"}, "type-VF", 0, False, 4),
        ({"vendor_id": "8086", "product_id": "0001"}, "type-PCI", 1, False, 1),
        ({"vendor_id": "8086", "product_id": "0002"}, "type-PCI", 1, False, 1)]


def test_the_same_model_on_two_numa_nodes_makes_two_pools():
    devices = [PciDevice("0000:af:00.0", "8086", "0001", numa_node=0),
               PciDevice("0000:b0:00.0", "8086", "0001", numa_node=1),
               PciDevice("0000:b1:00.0", "8086", "0001", numa_node=1)]

    assert [(p.numa_node, p.count) for p in group_pools(devices, ["vendor_id", "product_id"])] == [(0, 1), (1, 2)]


@pytest.mark.parametrize("attrs", [["vendor_id", "product_id", "extra_info"], ["e.group"], []])
def test_pool_keys_are_hashable_and_equal_exactly_for_devices_sharing_a_pool(attrs):
    a = PciDevice("0000:af:00.0", "8086", "0001", extra_info={"e.group": "gpu", "trusted": "true"})
    b = PciDevice("0000:b0:00.0", "8086", "0001", extra_info={"trusted": "true", "e.group": "gpu"})
    c = PciDevice("0000:b1:00.0", "8086", "0001", extra_info={"e.group": "gpu", "remote_managed": "true"})

    assert pool_key(a, attrs) == pool_key(b, attrs)
    assert pool_key(a, attrs) != pool_key(c, attrs)  # remote_managed always splits
    assert len({pool_key(a, attrs), pool_key(b, attrs), pool_key(c, attrs)}) == 2


def test_untagged_and_explicitly_unmanaged_vfs_share_a_pool_and_tags_group_case_insensitively():
    vfs = [PciDevice("0000:3b:02.0", "8086", "154c", dev_type="type-VF", numa_node=0,
                     extra_info={"physical_network": "physnet2"}),
           PciDevice("0000:3b:02.1", "8086", "154c", dev_type="type-VF", numa_node=0,
                     extra_info={"physical_network": "PHYSNET2", "remote_managed": "false"})]

    pools = group_pools(vfs, ["vendor_id", "product_id", "extra_info"])

    assert [(p.attrs, p.count) for p in pools] == [
        ({"vendor_id": "8086", "product_id": "154c", "physical_network": "physnet2", "remote_managed": "false"}, 2)]
