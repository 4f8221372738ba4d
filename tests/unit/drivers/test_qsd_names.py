"""The names the qsd driver gives exports and nodes carry the ids back, within QEMU's id rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from dpustack.drivers.storage.qsd_names import export_id, node_name, parse_export_id

QEMU_ID = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")  # id_wellformed() in QEMU
ids = st.text(min_size=1, max_size=128)


def test_an_export_id_reads_like_the_ids_it_carries():
    assert export_id("storage-vol-1", "vol-1") == "dpustack.storage-vol-1.vol-1"
    assert export_id("storage-7f3e.a", "7f3e:a_b") == "dpustack.storage-7f3e_2ea.7f3e_3aa_5fb"


@given(function_id=ids, volume_id=ids)
def test_every_pair_of_ids_makes_a_well_formed_export_id_that_gives_them_back(function_id, volume_id):
    export = export_id(function_id, volume_id)
    assert QEMU_ID.fullmatch(export)
    assert parse_export_id(export) == (function_id, volume_id)


@given(volume_id=ids)
def test_every_volume_id_makes_a_node_name_qemu_takes(volume_id):
    name = node_name(volume_id)
    assert QEMU_ID.fullmatch(name) and len(name) < 32


def test_volumes_get_different_nodes():
    assert node_name("vol-1") != node_name("vol-2")
    assert node_name("vol-1") == node_name("vol-1")


@pytest.mark.parametrize("export", ["probe", "dpustack", "dpustack.a", "dpustack.a.b.c", "other.a.b",
                                    "dpustack._41.b",  # "A" written escaped: not how the driver writes it
                                    "dpustack.a_zz.b", "dpustack.a_ff.b", "dpustack..b"])
def test_an_export_the_driver_did_not_make_is_not_read_as_an_attachment(export):
    assert parse_export_id(export) is None
