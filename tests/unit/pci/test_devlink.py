"""devlink port output (seed 001): flavours and logical numbers, and (PF MAC, VF number) -> representor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpustack.errors import InvalidInput, NotFound
from dpustack.pci.devlink import find_representor, parse_ports

FIXTURES = Path(__file__).parent / "fixtures"
PF0_MAC, PF1_MAC = "0c:42:a1:d7:c0:5a", "0c:42:a1:d7:c0:5b"


@pytest.fixture
def dpu_ports():
    return parse_ports((FIXTURES / "devlink_dpu_seed001.json").read_text())


def test_the_dpu_side_shows_uplinks_pf_and_vf_representors_with_their_numbers(dpu_ports):
    by_netdev = {port.netdev: port for port in dpu_ports}

    assert len(dpu_ports) == 12
    assert (by_netdev["p0"].flavour, by_netdev["p0"].number) == ("physical", 0)
    assert (by_netdev["pf1hpf"].flavour, by_netdev["pf1hpf"].pfnum, by_netdev["pf1hpf"].hw_addr) == (
        "pcipf", 1, PF1_MAC)
    vf = by_netdev["pf0vf2"]
    assert (vf.flavour, vf.pfnum, vf.vfnum, vf.handle, vf.device) == (
        "pcivf", 0, 2, "pci/0000:03:00.0/196611", "pci/0000:03:00.0")


def test_the_host_side_shows_physical_and_virtual_ports_without_vf_numbers():
    ports = parse_ports((FIXTURES / "devlink_host_seed001.json").read_text())

    assert sorted({p.flavour for p in ports}) == ["physical", "virtual"]
    assert {p.number for p in ports if p.flavour == "virtual"} == {0}  # the seed's point: no VF index here
    assert all(p.vfnum is None for p in ports)


@pytest.mark.parametrize(("pf_mac", "vf_num", "representor"), [
    (PF0_MAC, 0, "pf0vf0"), (PF0_MAC, 3, "pf0vf3"), (PF1_MAC, 2, "pf1vf2"), ("0C-42-A1-D7-C0-5B", 3, "pf1vf3")])
def test_pf_mac_and_vf_number_name_one_representor(dpu_ports, pf_mac, vf_num, representor):
    assert find_representor(dpu_ports, pf_mac, vf_num).netdev == representor


def test_an_unknown_pf_mac_is_not_found_naming_pf_mac(dpu_ports):
    with pytest.raises(NotFound) as caught:
        find_representor(dpu_ports, "0c:42:a1:00:00:01", 0)

    assert caught.value.field == "pf_mac"


def test_a_vf_number_beyond_the_pf_is_not_found_naming_vf_num(dpu_ports):
    with pytest.raises(NotFound) as caught:
        find_representor(dpu_ports, PF0_MAC, 4)

    assert caught.value.field == "vf_num"
    assert "pf0" in caught.value.message


def test_a_vf_of_the_same_pfnum_on_another_nic_switch_is_not_taken():
    def port(netdev: str, flavour: str, **attrs: object) -> dict[str, object]:
        return {"type": "eth", "netdev": netdev, "flavour": flavour, "controller": 1, **attrs}

    ports = parse_ports({"port": {
        "pci/0000:03:00.0/1": port("pf0hpf", "pcipf", pfnum=0, function={"hw_addr": PF0_MAC}),
        "pci/0000:03:00.0/2": port("a-pf0vf0", "pcivf", pfnum=0, vfnum=0),
        "pci/0000:83:00.0/1": port("pf0hpf", "pcipf", pfnum=0, function={"hw_addr": PF1_MAC}),
        "pci/0000:83:00.0/2": port("b-pf0vf0", "pcivf", pfnum=0, vfnum=0)}})

    assert find_representor(ports, PF1_MAC, 0).netdev == "b-pf0vf0"


def test_a_malformed_mac_is_invalid_input_naming_pf_mac(dpu_ports):
    with pytest.raises(InvalidInput) as caught:
        find_representor(dpu_ports, "not-a-mac", 0)

    assert caught.value.field == "pf_mac"


@pytest.mark.parametrize(("text", "field"), [
    ("[]", "port"),
    ("{not json", "port"),
    (json.dumps({"port": {"pci/0000:03:00.0/1": {"flavour": "pcivf", "vfnum": "3"}}}), "port.pci/0000:03:00.0/1.vfnum"),
    (json.dumps({"port": {"pci/0000:03:00.0/1": {"flavour": "weird"}}}), "port.pci/0000:03:00.0/1.flavour"),
    (json.dumps({"port": {"pci/0000:03:00.0/1": {"flavour": "pcipf", "pfnum": True}}}),
     "port.pci/0000:03:00.0/1.pfnum"),
])
def test_malformed_output_is_one_error_naming_the_field(text, field):
    with pytest.raises(InvalidInput) as caught:
        parse_ports(text)

    assert caught.value.field == field
