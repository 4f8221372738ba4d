"""Listings and `show`: Rich tables by default, the API objects as JSON with -f json."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke


def test_flavor_create_then_list_shows_a_table_row(dpustack: Invoke) -> None:
    created = dpustack("flavor", "create", "bm.small", "--vcpus", "8", "--ram", "16384", "--disk", "40",
                       "--type", "bm")
    assert created.exit_code == 0, created.output
    listing = dpustack("flavor", "list")
    assert listing.exit_code == 0
    assert "bm.small" in listing.stdout and "16384" in listing.stdout
    assert "┃" in listing.stdout or "│" in listing.stdout  # a Rich table, not JSON


def test_listing_json_is_the_api_objects_with_sorted_keys(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("flavors", name="bm.small", vcpus=8, ram=16384, disk=40, type="bm", extra_specs={})
    result = dpustack("flavor", "list", "-f", "json")
    assert result.exit_code == 0
    flavors = json.loads(result.stdout)
    assert [f["name"] for f in flavors] == ["bm.small"]
    assert list(flavors[0]) == sorted(flavors[0])
    assert set(flavors[0]) >= {"id", "name", "vcpus", "ram", "disk", "type", "extra_specs"}


def test_show_json_is_one_object(dpustack: Invoke) -> None:
    dpustack("network", "create", "net1", "--subnet", "10.10.0.0/24")
    result = dpustack("network", "show", "net1", "-f", "json")
    assert result.exit_code == 0
    network = json.loads(result.stdout)
    assert network["name"] == "net1"
    assert network["subnets"][0]["cidr"] == "10.10.0.0/24"


def test_image_create_uploads_the_file_content(dpustack: Invoke, fake: FakeApi, tmp_path) -> None:
    disk = tmp_path / "centos.img"
    disk.write_bytes(b"\x00" * 510 + b"\x55\xaa" + b"payload" * 1000)
    result = dpustack("image", "create", "centos", "--file", str(disk), "-f", "json")
    assert result.exit_code == 0, result.output
    image = json.loads(result.stdout)
    assert image["status"] == "active"
    assert fake.uploads[image["id"]] == disk.read_bytes()
    upload = next(r for r in fake.requests if r.method == "PUT")
    assert upload.headers["content-type"] == "application/octet-stream"


def test_image_create_with_a_missing_file_says_so(dpustack: Invoke, tmp_path) -> None:
    result = dpustack("image", "create", "centos", "--file", str(tmp_path / "nope.img"))
    assert result.exit_code == 1
    assert "error: no such file" in result.stderr


def test_port_list_filters_by_server_and_network(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("port", "list", "--server", "web1", "--network", "net1")
    request = fake.requests[-1]
    assert request.url.path == "/v1/ports"
    assert dict(request.url.params) == {"instance": "web1", "network": "net1"}


def test_volume_create_sends_size_in_gib(dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("volume", "create", "data1", "--size", "10")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {"name": "data1", "size": 10}


def test_token_create_shows_the_secret_once_and_checks_the_role(dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("token", "create", "--project", "p2", "--role", "agent", "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["token"] == "secret-token"
    assert json.loads(fake.requests[-1].content) == {"project": "p2", "role": "agent"}
    bad = dpustack("token", "create", "--project", "p2", "--role", "root")
    assert bad.exit_code == 2


def test_node_list_shows_status_and_capacity(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("nodes", hostname="dpu-bm-1", status="up", ready=True, node_type="bm", dpu_model="BF2",
             total_cpu=64, claimed_cpu=8, total_mem=262144, claimed_mem=16384, instance_count=1,
             last_seen="2025-01-01T00:00:00+00:00")
    result = dpustack("node", "list")
    assert result.exit_code == 0
    assert "dpu-bm-1" in result.stdout and "up" in result.stdout and "8/64" in result.stdout


def test_port_create_sends_network_and_vnic_type(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("network", "create", "net1", "--subnet", "10.10.0.0/24")
    result = dpustack("port", "create", "--network", "net1", "--vnic-type", "remote-managed", "--name", "rm0")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {"network": "net1", "vnic_type": "remote-managed",
                                                     "name": "rm0"}
    assert "remote-managed" in result.stdout
    plain = dpustack("port", "create", "--network", "net1", "-f", "json")
    assert json.loads(fake.requests[-1].content) == {"network": "net1", "vnic_type": "normal"}
    assert json.loads(plain.stdout)["vnic_type"] == "normal"
    assert dpustack("port", "create", "--network", "net1", "--vnic-type", "smart").exit_code == 2


def test_port_show_has_vnic_type_requested_chassis_and_binding_profile(dpustack: Invoke, fake: FakeApi) -> None:
    port = fake.add("ports", name="rm0", status="ACTIVE", mac_address="fa:16:3e:00:00:09", fixed_ips=[],
                    network_id="n1", instance_id="i1", vnic_type="remote-managed", binding_host_id="dpu-bm-1",
                    requested_chassis="dpu-bm-1",
                    binding_profile={"pci_slot": "0000:03:00.2", "pci_vendor_info": "15b3:101e",
                                     "card_serial_number": "MT2001X00001", "vf_num": 0})
    result = dpustack("port", "show", port["id"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("vnic_type" in line and "remote-managed" in line for line in lines)
    assert any("requested_chassis" in line and "dpu-bm-1" in line for line in lines)
    for text in ("pci_slot=0000:03:00.2", "pci_vendor_info=15b3:101e", "card_serial_number=MT2001X00001",
                 "vf_num=0"):
        assert text in result.stdout, text


def test_port_delete_removes_the_port_from_the_listing(dpustack: Invoke) -> None:
    dpustack("network", "create", "net1", "--subnet", "10.10.0.0/24")
    port = json.loads(dpustack("port", "create", "--network", "net1", "-f", "json").stdout)
    deleted = dpustack("port", "delete", port["id"])
    assert deleted.exit_code == 0 and f"port {port['id']} deleted" in deleted.stdout
    assert json.loads(dpustack("port", "list", "-f", "json").stdout) == []
    missing = dpustack("port", "delete", port["id"])
    assert missing.exit_code != 0 and "not found" in missing.output
