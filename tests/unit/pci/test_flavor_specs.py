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
