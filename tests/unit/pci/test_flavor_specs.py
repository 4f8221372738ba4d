"""Which attributes may define a PCI flavor, and how flavors match devices."""

from __future__ import annotations

import pytest

from dpustack.errors import InvalidInput
from dpustack.pci.device import PciDevice
from dpustack.pci.flavors import spec_matches, validate_spec

GPU1 = PciDevice(address="0000:81:00.0", vendor_id="8086", product_id="0001", extra_info={"e.group": "gpu"})
QA3 = PciDevice(address="0000:84:00.0", vendor_id="1af5", product_id="000b", extra_info={"e.QAclass": "3"})


def test_only_pool_attributes_may_define_a_flavor():
    attrs = ["vendor_id", "product_id", "extra_info"]
    assert validate_spec({"vendor_id": "8086", "product_id": "000[1-2]"}, attrs, field="f") == {
        "vendor_id": "8086", "product_id": "000[1-2]"}
    assert validate_spec({"e.QAclass": "(1|3)"}, attrs, field="f") == {"e.QAclass": "(1|3)"}
    for key in ("address", "host", "numa_node"):
        with pytest.raises(InvalidInput) as error:
            validate_spec({key: "x"}, attrs, field="pci-flavor")
        assert error.value.field == f"pci-flavor.{key}"
    with pytest.raises(InvalidInput):
        validate_spec({"e.group": "gpu"}, ["vendor_id"], field="f")  # e.* needs extra_info or the key itself
    assert validate_spec({"e.group": "gpu"}, ["e.group"], field="f")
    with pytest.raises(InvalidInput, match="not a valid expression"):
        validate_spec({"vendor_id": "(80"}, attrs, field="f")


def test_flavors_match_with_simplified_regular_expressions_and_may_overlap():
    assert spec_matches({"vendor_id": "8086", "product_id": "000[1-2]"}, GPU1)
    assert spec_matches({"vendor_id": "0x8086", "product_id": "*"}, GPU1)
    assert spec_matches({"e.group": "gpu"}, GPU1)
    assert spec_matches({"e.QAclass": "(1|3)"}, QA3) and not spec_matches({"e.QAclass": "1"}, QA3)
    assert not spec_matches({"e.group": "gpu"}, QA3)  # a missing extra never matches
    assert not spec_matches({}, GPU1)  # an undefined flavor selects nothing


def test_tag_values_compare_case_insensitively():
    vf = PciDevice("0000:3b:02.0", "8086", "154c", dev_type="type-VF",
                   extra_info={"physical_network": "physnet2", "trusted": "true", "e.group": "NIC"})

    assert spec_matches({"physical_network": "PhysNet2"}, vf)
    assert spec_matches({"trusted": "True", "e.group": "nic"}, vf)
    assert spec_matches({"physical_network": "physnet(1|2)"}, vf)
    assert not spec_matches({"physical_network": "physnet1"}, vf)


def test_an_untagged_vf_or_pf_counts_as_not_remote_managed():
    vf = PciDevice("0000:3b:02.0", "8086", "154c", dev_type="type-VF")
    pf = PciDevice("0000:3b:00.0", "8086", "1572", dev_type="type-PF")
    dpu_vf = PciDevice("0000:05:00.3", "15b3", "101e", dev_type="type-VF", extra_info={"remote_managed": "true"})

    assert spec_matches({"remote_managed": "false"}, vf) and spec_matches({"remote_managed": "False"}, pf)
    assert not spec_matches({"remote_managed": "false"}, dpu_vf)
    assert not spec_matches({"remote_managed": "true"}, vf)


def test_dev_type_and_remote_managed_may_always_define_a_flavor():
    # Pools are always split by both, whatever pci_flavor_attrs says; without dev_type no flavor could ask for a PF.
    assert validate_spec({"vendor_id": "8086", "dev_type": "type-PF"}, ["vendor_id"], field="f") == {
        "vendor_id": "8086", "dev_type": "type-PF"}
    assert validate_spec({"remote_managed": "false"}, ["vendor_id"], field="f") == {"remote_managed": "false"}
