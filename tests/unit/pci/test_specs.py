"""Device filters (seed 003 pci_information, and the older whitelist): what a node offers, with which extras."""

from __future__ import annotations

import logging

import pytest

from dpustack.agent.config import parse_config
from dpustack.errors import InvalidInput
from dpustack.pci.device import TYPE_PCI, TYPE_PF, TYPE_VF, PciDevice
from dpustack.pci.specs import compile_pattern, parse_information, parse_whitelist, select

GPU1 = PciDevice("0000:af:00.0", "8086", "0001")
GPU2 = PciDevice("0000:b0:00.0", "8086", "0002")
GPU3 = PciDevice("0000:b1:00.0", "8086", "0003")
PF = PciDevice("0000:05:00.0", "15b3", "a2d6", dev_type=TYPE_PF, devname="enp5s0f0", card_serial_number="MT1")
VF0 = PciDevice("0000:05:00.3", "15b3", "101e", dev_type=TYPE_VF, parent_addr=PF.address, vf_num=0,
                card_serial_number="MT1")
VF1 = PciDevice("0000:05:00.4", "15b3", "101e", dev_type=TYPE_VF, parent_addr=PF.address, vf_num=1,
                card_serial_number="MT1")


def offered(devices, entries):
    return {d.address: d.extra_info for d in select(devices, parse_information(entries)).devices}


@pytest.mark.parametrize(("pattern", "key", "yes", "no"), [
    ("000[1-2]", "product_id", ["0001", "0002"], ["0003", "00012"]),
    ("(1|3)", "e.QAclass", ["1", "3"], ["2", "13"]),
    ("*", "devname", ["", "enp5s0f0"], []),
    ("0xa", "product_id", ["000a", "000A"], ["00a0", "0xa"]),
    ("15B3", "vendor_id", ["15b3"], ["15b4"]),
    ("0000:05:00.*", "address", ["0000:05:00.3", "0000:05:00.0"], ["0000:05:02.3", "0000:3b:00.0"]),
    ("enp5s0f*", "devname", ["enp5s0f0", "enp5s0f1np0v3"], ["ENP5S0F0"]),
])
def test_simplified_regular_expressions(pattern, key, yes, no):
    compiled = compile_pattern(pattern, key)

    assert [v for v in yes if compiled.fullmatch(v)] == yes
    assert [v for v in no if compiled.fullmatch(v)] == []


def test_an_entry_offers_the_devices_it_matches_with_its_extras_and_tags():
    result = offered([GPU1, GPU2, GPU3], [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"},
                                           "extra": {"e.group": "gpu", "trusted": True}}])

    assert result == {GPU1.address: {"e.group": "gpu", "trusted": "true"},
                      GPU2.address: {"e.group": "gpu", "trusted": "true"}}


def test_the_first_matching_entry_wins():
    result = offered([GPU1, GPU2], [{"match": {"product_id": "0002"}, "extra": {"e.group": "big"}},
                                    {"match": {"vendor_id": "8086"}, "extra": {"e.group": "any"}}])

    assert result == {GPU1.address: {"e.group": "any"}, GPU2.address: {"e.group": "big"}}


def test_an_entry_naming_a_pf_covers_its_vfs():
    result = offered([PF, VF0, VF1, GPU1], [{"match": {"devname": "enp5s0f0"},
                                             "extra": {"physical_network": "physnet1"}}])

    assert result == {a: {"physical_network": "physnet1"} for a in (PF.address, VF0.address, VF1.address)}


def test_a_vf_entry_before_its_pf_entry_keeps_the_vf_extras():
    result = offered([PF, VF0], [{"match": {"product_id": "101e"}, "extra": {"e.role": "vf"}},
                                 {"match": {"address": PF.address}, "extra": {"e.role": "pf"}}])

    assert result == {PF.address: {"e.role": "pf"}, VF0.address: {"e.role": "vf"}}


def test_remote_managed_vfs_with_a_card_serial_are_offered_and_pfs_are_refused_with_a_warning():
    selection = select([PF, VF0, VF1], parse_information([{"match": {"vendor_id": "15b3"},
                                                           "extra": {"remote_managed": "True"}}]))

    assert [d.address for d in selection.devices] == [VF0.address, VF1.address]
    assert all(d.remote_managed and d.extra_info == {"remote_managed": "true"} for d in selection.devices)
    assert selection.warnings == [
        "0000:05:00.0 is not offered (pci.information.0): remote_managed=true applies to VFs only "
        "and this is a type-PF"]


def test_a_remote_managed_vf_without_a_card_serial_is_not_offered():
    anonymous = PciDevice("0000:3b:02.0", "8086", "154c", dev_type=TYPE_VF)

    selection = select([anonymous], parse_information([{"match": {"product_id": "154c"},
                                                        "extra": {"remote_managed": True}}]))

    assert selection.devices == []
    assert "0000:3b:02.0" in selection.warnings[0] and "card serial number" in selection.warnings[0]


def test_remote_managed_false_is_fine_anywhere():
    devices = [PciDevice("0000:01:00.0", "1af4", "1000", dev_type=TYPE_PCI)]

    assert offered(devices, [{"match": {}, "extra": {"remote_managed": False}}]) == {
        "0000:01:00.0": {"remote_managed": "false"}}


def test_devices_no_entry_matches_are_not_offered():
    assert offered([GPU3], [{"match": {"product_id": "000[1-2]"}}]) == {}


def test_the_old_whitelist_form_mixes_match_keys_and_tags():
    specs = parse_whitelist([{"vendor_id": "15b3", "product_id": "101e", "physical_network": "physnet1",
                              "remote_managed": "true"}])

    selection = select([PF, VF0], specs)

    assert [(d.address, d.extra_info) for d in selection.devices] == [
        (VF0.address, {"physical_network": "physnet1", "remote_managed": "true"})]


def test_the_old_whitelist_form_loads_with_a_deprecation_warning(caplog):
    data = {"controller": {"url": "http://c:1", "token": "t"}, "insecure": True,
            "api": {"controller_credential_sha256": "0" * 64},
            "pci": {"whitelist": [{"vendor_id": "8086", "physical_network": "physnet2"}]}}

    with caplog.at_level(logging.WARNING):
        config = parse_config(data)

    assert [s.extra for s in config.pci.specs] == [{"physical_network": "physnet2"}]
    assert any("[[pci.whitelist]] is deprecated" in r.message for r in caplog.records)


@pytest.mark.parametrize(("entries", "field", "message"), [
    ([{"match": {"vendor_id": "8086"}}, {"match": {}}, {"match": {"vendr_id": "8086"}}],
     "pci.information.2.match.vendr_id", "unknown device property"),
    ([{"match": {"device_id": "0001"}}], "pci.information.0.match.device_id", "did you mean product_id?"),
    ([{"match": {"product_id": "000[1-2"}}], "pci.information.0.match.product_id", "not a valid pattern"),
    ([{"match": {"product_id": "(1|3"}}], "pci.information.0.match.product_id", "not a valid pattern"),
    ([{"match": {"numa_node": 0}}], "pci.information.0.match.numa_node", "must be a string"),
    ([{"match": {}, "extra": {"group": "gpu"}}], "pci.information.0.extra.group", "'e.<name>'"),
    ([{"match": {}, "extra": {"e.group": 3}}], "pci.information.0.extra.e.group", "must be a string"),
    ([{"match": {}, "extra": {"remote_managed": "yes"}}], "pci.information.0.extra.remote_managed",
     "must be true or false"),
    ([{"extra": {"e.group": "gpu"}}], "pci.information.0.match", "required"),
    ([{"match": {}, "extras": {}}], "pci.information.0.extras", "unknown key"),
    (["vendor_id=8086"], "pci.information.0", "must be a table"),
])
def test_a_malformed_entry_is_refused_naming_the_entry_and_field(entries, field, message):
    with pytest.raises(InvalidInput) as caught:
        parse_information(entries)

    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ") and message in caught.value.message


def test_a_malformed_whitelist_entry_names_its_key():
    with pytest.raises(InvalidInput) as caught:
        parse_whitelist([{"vendor_id": "8086"}, {"vendor_id": "8086", "physnet": "x"}])

    assert caught.value.field == "pci.whitelist.1.physnet"


# -- Nova's rules for entries ---------------------------------------------------------------------------
@pytest.mark.parametrize(("match", "key", "message"), [
    ({"address": "0000:00:05:00.3"}, "address", "too many fields"),
    ({"address": "0000:05:00.3.1"}, "address", "too many fields"),
    ({"address": "0000:05:00.8"}, "address", "function '8' of '0000:05:00.8' is above 0x7"),
    ({"address": "0000:05:20.0"}, "address", "slot '20' of '0000:05:20.0' is above 0x1f"),
    ({"address": "0000:100:00.0"}, "address", "bus '100' of '0000:100:00.0' is above 0xff"),
    ({"address": "0000:0g:00.0"}, "address", "bus '0g' of '0000:0g:00.0' is not a hex number"),
    ({"address": "0000:05:2*.0"}, "address", "matches no slot"),
    ({"address": "0000:05:00.[89]"}, "address", "can never match a PCI address"),
    ({"parent_addr": "0000:05:00.9"}, "parent_addr", "above 0x7"),
    ({"vendor_id": "15b3e"}, "vendor_id", "not a 4-digit hex id"),
    ({"product_id": "0x12345"}, "product_id", "not a 4-digit hex id"),
    ({"vendor_id": "80g6"}, "vendor_id", "non-hex digits"),
    ({"product_id": "10[1-2]ez"}, "product_id", "can never match a 4-digit hex id"),
    ({"product_id": "(1|3)"}, "product_id", "can never match"),
    ({"address": "0000:05:00.0", "devname": "enp5s0f0"}, "devname", "devname or address, not both"),
])
def test_an_entry_that_can_never_match_is_refused_naming_the_entry_and_key(match, key, message):
    entries = [{"match": {"vendor_id": "15b3"}}, {"match": match}]

    with pytest.raises(InvalidInput) as caught:
        parse_information(entries)
    with pytest.raises(InvalidInput) as caught_old_form:
        parse_whitelist([{"vendor_id": "15b3"}, match])

    assert caught.value.field == f"pci.information.1.match.{key}"
    assert caught.value.message.startswith(f"pci.information.1.match.{key}: ") and message in caught.value.message
    assert caught_old_form.value.field == f"pci.whitelist.1.{key}"


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("0000:05:00.3", ["0000:05:00.3"], ["0000:05:00.4", "0001:05:00.3"]),
    ("05:00.3", ["0000:05:00.3", "0001:05:00.3"], ["0000:06:00.3"]),          # Nova: no domain, any domain
    ("*:05:00.*", ["0000:05:00.0", "0001:05:00.7"], ["0000:05:01.0"]),
    (":05:", ["0000:05:00.0", "0000:05:1f.7"], ["0000:06:00.0"]),              # Nova: bus 05, any slot
    ("0000:5:0.3", ["0000:05:00.3"], ["0000:50:00.3"]),                         # fields are numbers
    ("0000:0A:00.*", ["0000:0a:00.1"], ["0000:0b:00.1"]),
    ("0000:05:0*", ["0000:05:00.3", "0000:05:0f.7"], ["0000:05:10.0"]),       # a `*` inside a field
    ("0000:05:00.[3-6]", ["0000:05:00.3", "0000:05:00.6"], ["0000:05:00.7"]),  # a regular expression
    ("0000:05:0(0|2)\\.[0-7]", ["0000:05:02.7"], ["0000:05:01.0"]),
    ("10000:01:00.0", ["10000:01:00.0"], ["0000:01:00.0"]),
    ("*", ["0000:05:00.3", "10000:01:00.0"], []),
])
def test_addresses_take_novas_glob_forms_and_regular_expressions(pattern, yes, no):
    (spec,) = parse_information([{"match": {"address": pattern}}])
    devices = [PciDevice(address, "8086", "0001") for address in yes + no]

    assert [d.address for d in devices if spec.matches(d)] == yes


def test_patterns_for_ids_that_can_match_are_kept():
    (spec,) = parse_information([{"match": {"vendor_id": "0x15B3", "product_id": "10[1-2]e|a2d*"}}])

    assert spec.matches(VF0) and spec.matches(PF) and not spec.matches(GPU1)


def test_an_entry_naming_a_pf_address_and_the_vf_product_offers_that_pfs_vfs():
    other_pf = PciDevice("0000:05:00.1", "15b3", "a2d6", dev_type=TYPE_PF, devname="enp5s0f1")
    other_vf = PciDevice("0000:05:02.3", "15b3", "101e", dev_type=TYPE_VF, parent_addr=other_pf.address)
    devices = [PF, VF0, VF1, other_pf, other_vf]

    by_address = offered(devices, [{"match": {"address": PF.address, "product_id": "101e"},
                                    "extra": {"physical_network": "physnet1"}}])
    by_devname = offered(devices, [{"match": {"devname": "enp5s0f1", "vendor_id": "15b3", "product_id": "101e"}}])

    assert by_address == {VF0.address: {"physical_network": "physnet1"}, VF1.address: {"physical_network": "physnet1"}}
    assert by_devname == {other_vf.address: {}}


def test_malformed_entries_stop_the_agent_at_start_naming_the_entry():
    data = {"controller": {"url": "http://c:1", "token": "t"}, "api": {"token": "a"},
            "pci": {"information": [{"match": {"vendor_id": "15b3"}}, {"match": {"address": "0000:05:00.8"}}]}}

    with pytest.raises(InvalidInput) as caught:
        parse_config(data)

    assert caught.value.field == "pci.information.1.match.address"
    assert caught.value.message.startswith("agent.toml: pci.information.1.match.address: function '8'")
