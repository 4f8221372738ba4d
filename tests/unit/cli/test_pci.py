"""`pci device list` and `pci pool list`: what the nodes offer, optionally for one node."""

from __future__ import annotations

import json
import re

import httpx

from cli_fake_api import FakeApi, Invoke


def _devices(fake: FakeApi) -> None:
    common = {"vendor_id": "15b3", "product_id": "a2d6", "numa_node": 0, "removed": False, "instance_id": None,
              "request_id": None, "card_serial_number": "MT2001X00001", "pf_mac": "0c:42:a1:00:00:01",
              "devname": ""}
    fake.add("pci_devices", node="dpu-bm-1", address="0000:03:00.0", dev_type="type-PF", parent_addr=None,
             status="unavailable", vf_num=None, extra_info={"physical_network": "physnet1"}, **common)
    fake.add("pci_devices", node="dpu-bm-1", address="0000:03:00.2", dev_type="type-VF",
             parent_addr="0000:03:00.0", status="allocated", vf_num=0,
             extra_info={"remote_managed": "true"}, **{**common, "product_id": "101e"})
    fake.add("pci_devices", node="dpu-bm-2", address="0000:81:00.0", dev_type="type-PCI", parent_addr=None,
             status="available", vf_num=None, extra_info={},
             **{**common, "vendor_id": "8086", "product_id": "0001", "card_serial_number": "", "numa_node": 1})


def test_device_list_shows_type_parent_serial_and_tags(dpustack: Invoke, fake: FakeApi) -> None:
    _devices(fake)
    result = dpustack("pci", "device", "list")
    assert result.exit_code == 0, result.output
    vf_row = next(line for line in result.stdout.splitlines() if "0000:03:00.2" in line)
    for text in ("dpu-bm-1", "15b3:101e", " VF ", "0000:03:00.0", "allocated", "MT2001X00001",
                 "remote_managed=true"):
        assert text in vf_row, text
    pf_row = next(line for line in result.stdout.splitlines() if "0000:03:00.0 " in line and " PF " in line)
    assert "physical_network=physnet1" in pf_row and "unavailable" in pf_row
    assert "8086:0001" in result.stdout and " PCI " in result.stdout


def test_device_list_filters_by_node_and_json_is_the_api_objects(dpustack: Invoke, fake: FakeApi) -> None:
    _devices(fake)
    result = dpustack("pci", "device", "list", "--node", "dpu-bm-2", "-f", "json")
    assert result.exit_code == 0, result.output
    assert fake.requests[-1].url.path == "/v1/pci/devices"
    assert dict(fake.requests[-1].url.params) == {"node": "dpu-bm-2"}
    devices = json.loads(result.stdout)
    assert [d["address"] for d in devices] == ["0000:81:00.0"]
    assert devices[0]["dev_type"] == "type-PCI"


def test_pool_list_shows_attrs_and_free_and_used_counts(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("pci_pools", node="dpu-bm-1", attrs={"vendor_id": "15b3", "product_id": "101e"}, numa_node=0,
             dev_type="type-VF", remote_managed=True, count=8, free=5, used=2)
    result = dpustack("pci", "pool", "list", "--node", "dpu-bm-1")
    assert result.exit_code == 0, result.output
    assert dict(fake.requests[-1].url.params) == {"node": "dpu-bm-1"}
    row = next(line for line in result.stdout.splitlines() if "dpu-bm-1" in line)
    for text in ("vendor_id=15b3, product_id=101e", " VF ", "yes", " 8 ", " 5 ", " 2 "):
        assert text in row, text
    pools = json.loads(dpustack("pci", "pool", "list", "-f", "json").stdout)
    assert pools[0]["free"] == 5 and pools[0]["remote_managed"] is True


def test_device_list_as_a_member_reports_the_api_error(dpustack: Invoke, fake: FakeApi) -> None:
    forbidden = httpx.Response(403, json={"error": {"code": "forbidden", "message": "admin only"}})
    fake.routes.append(("GET", re.compile(r"/v1/pci/devices$"), lambda request: forbidden))
    result = dpustack("pci", "device", "list")
    assert result.exit_code == 1
    assert "error: admin only" in result.stderr
