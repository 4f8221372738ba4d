"""The `pci_passthrough:pci_flavor` grammar of seed 003."""

from __future__ import annotations

import pytest

from dpustack.controller.numa_fit import numa_request
from dpustack.errors import InvalidInput
from dpustack.pci.requests import FlavorRequest, numa_policy, parse_pci_flavor_spec


@pytest.mark.parametrize("text,expected", [
    ("1:IntelGPU,NvGPU;1:intelQuickAssist;", [FlavorRequest(1, ("IntelGPU", "NvGPU")),
                                              FlavorRequest(1, ("intelQuickAssist",))]),
    ("1:bigGPU;", [FlavorRequest(1, ("bigGPU",))]),
    ("'1:bigGPU,bigGPU2;'".strip("'"), [FlavorRequest(1, ("bigGPU", "bigGPU2"))]),
    ("3:QA13", [FlavorRequest(3, ("QA13",))]),
    ("bigGPU", [FlavorRequest(1, ("bigGPU",))]),          # a count of 1 may be omitted
    (" 2 : a , b ; c ", [FlavorRequest(2, ("a", "b")), FlavorRequest(1, ("c",))]),
])
def test_requests_parse_as_the_seed_writes_them(text, expected):
    assert parse_pci_flavor_spec(text) == expected


@pytest.mark.parametrize("text", ["", ";", "0:gpu", "x:gpu", "1:", "1:a,,b", "1:gp u", "65:gpu", "1:a;;1:b"])
def test_malformed_requests_are_refused_naming_the_extra_spec(text):
    with pytest.raises(InvalidInput) as error:
        parse_pci_flavor_spec(text)
    assert error.value.field == "pci_passthrough:pci_flavor"


def test_numa_policy_defaults_to_legacy_and_rejects_unknown_values():
    assert numa_policy({}) == "legacy"
    assert numa_policy({"hw:pci_numa_affinity_policy": "required"}) == "required"
    with pytest.raises(InvalidInput):
        numa_policy({"hw:pci_numa_affinity_policy": "sometimes"})


def test_the_pci_claim_and_the_numa_fit_take_the_same_policies_socket_too():
    for policy in ("required", "preferred", "legacy", "socket"):
        assert numa_policy({"hw:pci_numa_affinity_policy": policy.upper()}) == policy
        assert numa_request(1, 512, {"hw:pci_numa_affinity_policy": policy.upper()}).pci_policy == policy
    with pytest.raises(InvalidInput) as error:
        numa_request(1, 512, {"hw:pci_numa_affinity_policy": "sometimes"})
    assert "required or preferred or legacy or socket" in error.value.message
