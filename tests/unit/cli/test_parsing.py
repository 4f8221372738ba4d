"""`KEY=VALUE` and `--nic` parsing: values pass through untouched, mistakes name what is wrong."""

from __future__ import annotations

import pytest

from dpustack.cli.context import CliUsageError
from dpustack.cli.parsing import key_value, key_values, nic


def test_key_value_splits_on_the_first_equals_only() -> None:
    assert key_value("product_id=000[1-2]", "--set") == ("product_id", "000[1-2]")
    assert key_value("e.note=a=b", "--set") == ("e.note", "a=b")


def test_a_key_may_contain_colons_and_the_value_commas_and_semicolons() -> None:
    assert key_value("pci_passthrough:pci_flavor=1:IntelGPU,NvGPU;1:QA1", "--property") == (
        "pci_passthrough:pci_flavor", "1:IntelGPU,NvGPU;1:QA1")


def test_an_empty_value_is_kept() -> None:
    assert key_value("e.note=", "--set") == ("e.note", "")


@pytest.mark.parametrize("text", ["product_id", "=000[1-2]", ""])
def test_a_pair_without_key_or_equals_is_an_error_naming_the_option(text: str) -> None:
    with pytest.raises(CliUsageError, match=r"--set expects KEY=VALUE"):
        key_value(text, "--set")


def test_key_values_refuses_a_key_given_twice() -> None:
    assert key_values(["a=1", "b=2"], "--set") == {"a": "1", "b": "2"}
    with pytest.raises(CliUsageError, match="--set: key 'a' given twice"):
        key_values(["a=1", "a=2"], "--set")


def test_nic_maps_keys_to_the_api_fields() -> None:
    assert nic("net-id=net1,pci-flavor=1:bf2_vf,vnic-type=remote-managed") == {
        "network": "net1", "pci_flavor": "1:bf2_vf", "vnic_type": "remote-managed"}
    assert nic("port-id=p1") == {"port": "p1"}


def test_nic_parts_without_equals_continue_the_pci_flavor_list() -> None:
    assert nic("net-id=net1,pci-flavor=1:IntelGPU,NvGPU") == {"network": "net1", "pci_flavor": "1:IntelGPU,NvGPU"}
    assert nic("pci-flavor=1:A,B,C,vnic-type=direct,net-id=n") == {
        "pci_flavor": "1:A,B,C", "vnic_type": "direct", "network": "n"}


def test_nic_unknown_key_is_named() -> None:
    with pytest.raises(CliUsageError, match=r"unknown key 'net'"):
        nic("net=net1")
    with pytest.raises(CliUsageError, match=r"unknown key 'v4-fixed-ip'"):
        nic("net-id=net1,v4-fixed-ip=10.0.0.5")


@pytest.mark.parametrize(("text", "message"), [
    ("net1", "expected KEY=VALUE, got 'net1'"),
    ("net-id=net1,", "expected KEY=VALUE, got ''"),
    ("pci-flavor=1:A", "exactly one of net-id=NETWORK or port-id=PORT"),
    ("net-id=n,port-id=p", "exactly one of net-id=NETWORK or port-id=PORT"),
    ("net-id=n,net-id=m", "key 'net-id' given twice"),
    ("net-id=n,vnic-type=smart", "unknown vnic-type 'smart'"),
])
def test_nic_mistakes_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CliUsageError, match=message):
        nic(text)


def test_nic_security_group_may_repeat_and_becomes_a_list() -> None:
    assert nic("net-id=net1,security-group=web,security-group=db") == {
        "network": "net1", "security_groups": ["web", "db"]}
    assert nic("security-group=web,net-id=net1,pci-flavor=1:A,B") == {
        "network": "net1", "security_groups": ["web"], "pci_flavor": "1:A,B"}
    assert "security_groups" not in nic("net-id=net1")


@pytest.mark.parametrize(("text", "message"), [
    ("net-id=n,security-group=web,db", r"got 'db' \(repeat the key for each group: security-group=A,"),
    ("net-id=n,security-group=", "security-group= needs a value"),
    ("port-id=p,security-group=web", "security-group goes with net-id"),
])
def test_nic_security_group_mistakes_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CliUsageError, match=message):
        nic(text)
