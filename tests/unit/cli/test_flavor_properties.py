"""`flavor set/unset --property`: extra specs merged and removed one key at a time, values untouched."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke

PCI_SPEC = "pci_passthrough:pci_flavor"


def _flavor(fake: FakeApi, **extra_specs: str) -> None:
    fake.add("flavors", name="bm.gpu", vcpus=8, ram=16384, disk=40, type="bm", extra_specs=dict(extra_specs))


def test_set_puts_the_properties_with_colons_and_commas_untouched(dpustack: Invoke, fake: FakeApi) -> None:
    _flavor(fake, other="kept")
    result = dpustack("flavor", "set", "bm.gpu", "--property", f"{PCI_SPEC}=1:IntelGPU,NvGPU;1:QA1",
                      "--property", "hw:pci_numa_affinity_policy=required")
    assert result.exit_code == 0, result.output
    request = fake.requests[-1]
    assert (request.method, request.url.path) == ("PUT", "/v1/flavors/bm.gpu/extra-specs")
    assert json.loads(request.content) == {PCI_SPEC: "1:IntelGPU,NvGPU;1:QA1",
                                           "hw:pci_numa_affinity_policy": "required"}
    assert f"{PCI_SPEC}=1:IntelGPU,NvGPU;1:QA1" in result.stdout  # one spec a line, commas and all
    assert "other=kept" in result.stdout


def test_set_needs_key_equals_value(dpustack: Invoke, fake: FakeApi) -> None:
    _flavor(fake)
    missing = dpustack("flavor", "set", "bm.gpu")
    assert missing.exit_code == 2
    bare = dpustack("flavor", "set", "bm.gpu", "--property", PCI_SPEC)
    assert bare.exit_code == 1
    assert f"error: --property expects KEY=VALUE, got '{PCI_SPEC}'" in bare.stderr
    assert not any(r.method == "PUT" for r in fake.requests)


def test_unset_deletes_each_key_and_shows_the_flavor(dpustack: Invoke, fake: FakeApi) -> None:
    _flavor(fake, **{PCI_SPEC: "1:QA1", "hw:pci_numa_affinity_policy": "required", "other": "kept"})
    result = dpustack("flavor", "unset", "bm.gpu", "--property", PCI_SPEC,
                      "--property", "hw:pci_numa_affinity_policy", "-f", "json")
    assert result.exit_code == 0, result.output
    deletes = [r.url.path for r in fake.requests if r.method == "DELETE"]
    assert deletes == [f"/v1/flavors/bm.gpu/extra-specs/{PCI_SPEC}",
                       "/v1/flavors/bm.gpu/extra-specs/hw:pci_numa_affinity_policy"]
    assert json.loads(result.stdout)["extra_specs"] == {"other": "kept"}


def test_unset_of_a_missing_key_is_an_error(dpustack: Invoke, fake: FakeApi) -> None:
    _flavor(fake)
    result = dpustack("flavor", "unset", "bm.gpu", "--property", "nope")
    assert result.exit_code == 1
    assert "error: flavor 'bm.gpu' has no extra spec 'nope'" in result.stderr
