"""`pci-flavor create/update/list/show/delete`: seed 003 bodies, patterns passed through untouched."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke


def test_create_sends_name_and_description(dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("pci-flavor", "create", "IntelGPU", "--description", "Intel GPUs", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {"name": "IntelGPU", "description": "Intel GPUs"}
    assert json.loads(result.stdout)["spec"] == {}
    dpustack("pci-flavor", "create", "NvGPU")
    assert json.loads(fake.requests[-1].content) == {"name": "NvGPU"}


def test_update_puts_the_seed_body_with_patterns_untouched(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("pci-flavor", "create", "IntelGPU")
    result = dpustack("pci-flavor", "update", "IntelGPU", "--set", "vendor_id=8086",
                      "--set", "product_id=000[1-2]", "--set", "e.slot=(1|3)", "--description", "two GPUs")
    assert result.exit_code == 0, result.output
    request = fake.requests[-1]
    assert (request.method, request.url.path) == ("PUT", "/v1/pci-flavors/IntelGPU")
    assert json.loads(request.content) == {"action": "update", "pci-flavor": {
        "vendor_id": "8086", "product_id": "000[1-2]", "e.slot": "(1|3)", "description": "two GPUs"}}
    for text in ("vendor_id=8086", "product_id=000[1-2]", "e.slot=(1|3)", "two GPUs"):
        assert text in result.stdout, text


def test_update_without_changes_or_with_a_bare_key_is_an_error(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("pci-flavor", "create", "IntelGPU")
    sent = len(fake.requests)
    empty = dpustack("pci-flavor", "update", "IntelGPU")
    assert empty.exit_code == 1 and "error: nothing to update" in empty.stderr
    bare = dpustack("pci-flavor", "update", "IntelGPU", "--set", "product_id")
    assert bare.exit_code == 1 and "error: --set expects KEY=VALUE, got 'product_id'" in bare.stderr
    assert len(fake.requests) == sent


def test_update_with_an_attribute_the_nodes_do_not_group_by_reports_the_field(dpustack: Invoke,
                                                                              fake: FakeApi) -> None:
    dpustack("pci-flavor", "create", "IntelGPU")
    result = dpustack("pci-flavor", "update", "IntelGPU", "--set", "address=0000:81:00.0")
    assert result.exit_code == 1
    assert "error: 'address' is not one of the nodes' pci_flavor_attrs (field: pci-flavor.address)" in result.stderr


def test_list_starts_with_flavor_attrs_and_show_zero_shows_them(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("pci-flavor", "create", "QA1")
    listing = dpustack("pci-flavor", "list", "-f", "json")
    assert [f["name"] for f in json.loads(listing.stdout)] == ["_flavor_attrs", "QA1"]
    table = dpustack("pci-flavor", "list")
    assert "_flavor_attrs" in table.stdout and "QA1" in table.stdout
    shown = dpustack("pci-flavor", "show", "0")
    assert shown.exit_code == 0, shown.output
    assert fake.requests[-1].url.path == "/v1/pci-flavors/0"
    assert "_flavor_attrs" in shown.stdout
    for attr in ("vendor_id=True", "product_id=True", "extra_info=True"):
        assert attr in shown.stdout, attr


def test_delete_and_refusal_while_a_flavor_names_it(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("pci-flavor", "create", "QA1")
    dpustack("pci-flavor", "create", "spare")
    fake.add("flavors", name="bm.qa", vcpus=8, ram=16384, disk=40, type="bm",
             extra_specs={"pci_passthrough:pci_flavor": "1:QA1"})
    refused = dpustack("pci-flavor", "delete", "QA1")
    assert refused.exit_code == 1
    assert "error: PCI flavor 'QA1' is used by flavor 'bm.qa'" in refused.stderr
    deleted = dpustack("pci-flavor", "delete", "spare")
    assert deleted.exit_code == 0 and "pci-flavor spare deleted" in deleted.stdout
    assert (fake.requests[-1].method, fake.requests[-1].url.path) == ("DELETE", "/v1/pci-flavors/spare")
    missing = dpustack("pci-flavor", "show", "spare")
    assert missing.exit_code == 1 and "error: PCI flavor 'spare' not found" in missing.stderr
