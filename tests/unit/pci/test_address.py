"""PCI addresses: canonical form, numeric order, and domains wider than 16 bits."""

from __future__ import annotations

import pytest

from dpustack.errors import InvalidInput
from dpustack.pci.address import PciAddress, canonical_address, parse_address


def test_a_kernel_address_reads_as_domain_bus_slot_function():
    assert parse_address("0000:05:02.3") == PciAddress(0, 0x05, 0x02, 3)


def test_short_and_upper_case_forms_become_the_canonical_one():
    assert canonical_address("5:0.3") == "0000:05:00.3"
    assert canonical_address("0000:AF:1F.7") == "0000:af:1f.7"


def test_a_32_bit_domain_is_kept_whole():
    assert parse_address("10000:e1:00.0").domain == 0x10000
    assert canonical_address("10000:E1:00.0") == "10000:e1:00.0"
    assert canonical_address("ffffffff:00:00.0") == "ffffffff:00:00.0"


def test_addresses_order_numerically_even_across_domain_widths():
    addresses = [parse_address(a) for a in ("10000:00:00.0", "ffff:00:00.0", "0000:05:02.3", "0000:05:00.6")]

    assert [str(a) for a in sorted(addresses)] == ["0000:05:00.6", "0000:05:02.3", "ffff:00:00.0",
                                                   "10000:00:00.0"]


@pytest.mark.parametrize("text", ["", "0000:05:00", "0000:05:00.8", "0000:05:20.0", "100000000:00:00.0",
                                  "0000:005:00.0", "zz:00.0", "0000:05:00.0 extra"])
def test_malformed_addresses_are_refused_naming_the_field(text):
    with pytest.raises(InvalidInput) as caught:
        parse_address(text, field="match.address")

    assert caught.value.field == "match.address"


def test_a_vf_address_follows_from_the_pf_routing_id_offset_and_stride():
    pf = parse_address("0000:05:00.1")

    assert str(PciAddress.from_routing_id(pf.domain, pf.routing_id + 18)) == "0000:05:02.3"
    assert str(PciAddress.from_routing_id(0x10000, 0x2100)) == "10000:21:00.0"
