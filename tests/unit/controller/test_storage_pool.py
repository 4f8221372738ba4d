"""The qcow2 storage pool's layout: which layers make a volume, which are snapshots, what a crash leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpustack.controller.storage.pool import Base, Pending, VolumeIndex, VolumePool
from dpustack.controller.volumebackend.qcow2 import export_id, layer_node, node_key
from dpustack.errors import DpustackError, InvalidInput


@pytest.fixture
def pool(tmp_path):
    return VolumePool(tmp_path / "pool")


def test_a_snapshot_freezes_the_active_layer_and_a_new_one_goes_on_top():
    index = VolumeIndex(layers=(0,), base=Base(Path("/images/i"), "raw"))
    taken = index.with_snapshot("s1", 1)
    assert taken.layers == (0, 1) and taken.active == 1 and taken.snapshots == {"s1": 0}
    again = taken.with_snapshot("s2", 2)
    assert again.snapshots == {"s1": 0, "s2": 1} and again.below(1) == 0 and again.above(1) == 2
    assert again.below(0) is None


def test_deleting_a_snapshot_takes_its_layer_out_of_the_chain_and_flatten_forgets_the_base():
    index = VolumeIndex(layers=(0,)).with_snapshot("s1", 1).with_snapshot("s2", 2)
    merged = index.without_snapshot("s1")
    assert merged.layers == (1, 2) and merged.snapshots == {"s2": 1}
    with_base = VolumeIndex(layers=(0,), base=Base(Path("/i"), "qcow2"))
    assert with_base.flattened().base is None and with_base.flattened().layers == (0,)


def test_the_index_survives_its_json_form(pool):
    index = VolumeIndex(layers=(0, 2, 3), base=Base(pool.root / "images" / "i", "qcow2"),
                        snapshots={"s1": 2}, pending=Pending("s2", 4))
    (pool.volumes / "v1").mkdir()
    pool.write("v1", index)
    assert pool.read("v1") == index
    assert json.loads((pool.volumes / "v1" / "index.json").read_text())["layers"] == [0, 2, 3]
    assert not (pool.volumes / "v1" / "index.json.part").exists()


def test_a_volume_without_an_index_does_not_exist_and_a_damaged_one_is_an_error(pool):
    assert pool.read("v1") is None
    pool.start("v1")
    (pool.layer("v1", 0)).write_bytes(b"qcow2?")
    assert pool.read("v1") is None  # a layer alone is partial data
    (pool.volumes / "v1" / "index.json").write_text("{")
    with pytest.raises(DpustackError, match="damaged"):
        pool.read("v1")


def test_sweep_removes_partial_files_and_layers_no_index_names_but_keeps_a_pending_one(pool):
    pool.start("v1")
    for name in ("0.qcow2", "1.qcow2", "2.qcow2", "3.qcow2", "4.qcow2.part", "index.json.part"):
        (pool.volumes / "v1" / name).write_bytes(b"x")
    index = VolumeIndex(layers=(0, 2), pending=Pending("s", 3))
    pool.write("v1", index)
    assert pool.next_layer("v1", index) == 4
    pool.sweep("v1", index)
    assert sorted(p.name for p in (pool.volumes / "v1").iterdir()) == ["0.qcow2", "2.qcow2", "3.qcow2",
                                                                        "index.json"]


def test_new_layer_numbers_are_never_reused_even_for_files_a_crash_left(pool):
    pool.start("v1")
    (pool.volumes / "v1" / "7.qcow2").write_bytes(b"left over")
    assert pool.next_layer("v1", VolumeIndex(layers=(0, 2))) == 8
    assert pool.next_layer("v1", VolumeIndex(layers=(9,))) == 10


def test_a_snapshot_is_found_through_its_volume_and_volumes_resting_on_a_file_are_listed(pool):
    pool.start("v1")
    pool.write("v1", VolumeIndex(layers=(0, 1), snapshots={"s1": 0}))
    pool.point_snapshot("s1", "v1")
    assert pool.snapshot_holder("s1") == "v1" and pool.snapshot_holder("s2") is None
    pool.start("r1")
    pool.write("r1", VolumeIndex(layers=(0,), base=Base(pool.layer("v1", 0), "qcow2")))
    assert pool.resting_on(pool.layer("v1", 0)) == ["r1"] and pool.resting_on(pool.layer("v1", 1)) == []
    pool.forget_snapshot("s1")
    assert pool.snapshot_holder("s1") is None


def test_removing_a_volume_takes_its_index_first_and_leaves_nothing(pool):
    pool.start("v1")
    pool.write("v1", VolumeIndex(layers=(0,)))
    with pool.locked("v1"):
        pool.remove("v1")
    assert list(pool.volumes.iterdir()) == []
    pool.remove("v1")  # none is fine


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 200])
def test_ids_that_cannot_name_a_file_of_the_pool_are_refused(pool, bad):
    with pytest.raises(InvalidInput) as caught:
        pool.directory(bad)
    assert caught.value.field == "volume"
    with pytest.raises(InvalidInput) as caught:
        export_id(bad)
    assert caught.value.field == "attachment"


def test_daemon_names_fit_its_limits_whatever_the_ids():
    volume_id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    assert node_key(volume_id) == node_key(volume_id) != node_key(volume_id + "x")
    assert len(layer_node(volume_id, 999_999_999)) <= 31 and node_key(volume_id)[0].isalpha()
    assert export_id(volume_id) == f"att-{volume_id}"  # export ids must start with a letter
