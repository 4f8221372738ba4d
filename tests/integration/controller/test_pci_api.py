"""PCI flavors API (both paths), device states, and remote-managed ports (seed 001)."""

from __future__ import annotations

from typing import Iterator

import pytest

from dpustack.lab import pcitrees
from harness import BF2_FILTER, Cloud

@pytest.fixture
def bf2_cloud(tmp_path, database_url) -> Iterator[Cloud]:
    """dpu-bm-1 carries a BlueField-2 (serial MT0001) whose VFs are remote-managed; dpu-bm-2 has no DPU VFs."""
    cloud = Cloud(tmp_path, database_url, nodes=0)
    cloud.add_node("dpu-bm-1", cards=[pcitrees.bluefield2("MT0001")], pci={"information": BF2_FILTER})
    cloud.add_node("dpu-bm-2", cards=[pcitrees.gpu()], pci={"information": [{"match": {"vendor_id": "8086"}}]})
    cloud.setup_basics()
    try:
        yield cloud
    finally:
        cloud.close()


def test_pci_flavors_answer_on_v1_and_on_the_seed_paths(cloud):
    project = cloud.call("GET", "/v1/whoami")["project_id"]
    created = cloud.call("POST", f"/v2/{project}/os-pci-flavors",
                         {"pci-flavor": {"name": "GetMePowerfulldevice", "description": "xxxxx"}}, expect=201)
    uuid = created["os-pci-flavor"]["UUID"]
    updated = cloud.call("PUT", f"/v2/{project}/os-pci-flavors/{uuid}",
                         {"action": "update", "pci-flavor": {"description": "fast", "vendor_id": "8086"}})
    assert updated["os-pci-flavor"] == {"UUID": uuid, "name": "GetMePowerfulldevice", "description": "fast",
                                        "vendor_id": "8086"}
    names = [f["name"] for f in cloud.call("GET", f"/v2/{project}/os-pci-flavors")["os-pci-flavors"]]
    assert names == ["_flavor_attrs", "GetMePowerfulldevice"]
    attrs = cloud.call("GET", f"/v2/{project}/os-pci-flavor/0")["os-pci-flavor"]
    assert attrs["UUID"] == "0" and attrs["name"] == "_flavor_attrs" and attrs["vendor_id"] == "True"
    assert cloud.call("GET", "/v1/pci-flavors/GetMePowerfulldevice")["spec"] == {"vendor_id": "8086"}
    cloud.call("DELETE", f"/v2/{project}/os-pci-flavor/{uuid}", expect=204)
    assert cloud.api.get(f"/v1/pci-flavors/{uuid}").status_code == 404


def test_pci_flavor_rules(cloud):
    cloud.call("POST", "/v1/pci-flavors", {"name": "gpu"}, expect=201)
    answer = cloud.api.put("/v1/pci-flavors/gpu", json={"action": "update", "pci-flavor": {"address": "0000:*"}})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "pci-flavor.address"
    answer = cloud.api.put("/v1/pci-flavors/gpu", json={"action": "update", "pci-flavor": {"host": "n1"}})
    assert answer.status_code == 400
    answer = cloud.api.put("/v1/pci-flavors/gpu", json={"action": "replace", "pci-flavor": {}})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "action"
    cloud.call("POST", "/v1/projects", {"name": "acme"})
    member = cloud.call("POST", "/v1/tokens", {"project": "acme"})["token"]
    assert cloud.api.post("/v1/pci-flavors", json={"name": "x"},
                          headers={"Authorization": f"Bearer {member}"}).status_code == 403
    assert cloud.call("GET", "/v1/pci-flavors", token=member)[1]["name"] == "gpu"  # members may read
    cloud.call("POST", "/v1/flavors", {"name": "f", "vcpus": 1, "ram": 1, "disk": 1, "type": "bm"})
    answer = cloud.api.put("/v1/flavors/f/extra-specs", json={"pci_passthrough:pci_flavor": "1:gpu"})
    assert answer.status_code == 400 and "no definition" in answer.json()["error"]["message"]
    cloud.call("PUT", "/v1/pci-flavors/gpu", {"action": "update", "pci-flavor": {"vendor_id": "8086"}})
    answer = cloud.api.put("/v1/flavors/f/extra-specs", json={"pci_passthrough:pci_flavor": "1:nope"})
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "pci_passthrough:pci_flavor"
    answer = cloud.api.put("/v1/flavors/f/extra-specs", json={"pci_passthrough:pci_flavor": "x:gpu"})
    assert answer.status_code == 400
    cloud.call("PUT", "/v1/flavors/f/extra-specs", {"pci_passthrough:pci_flavor": "1:gpu"})
    assert cloud.api.delete("/v1/pci-flavors/gpu").status_code == 409  # flavor f still asks for it


def test_a_remote_managed_port_gets_a_dpu_vf_and_the_dpu_that_plugs_it(bf2_cloud):
    cloud = bf2_cloud
    nodes = {n["hostname"]: n for n in cloud.call("GET", "/v1/nodes")}
    assert nodes["dpu-bm-1"]["traits"] == ["COMPUTE_REMOTE_MANAGED_PORTS"] and nodes["dpu-bm-2"]["traits"] == []
    port = cloud.call("POST", "/v1/ports", {"network": "net1", "vnic_type": "remote-managed"}, expect=201)
    op = cloud.act("POST", "/v1/instances", {"name": "smart", "flavor": "bm.small", "image": "centos",
                                             "networks": [{"port": port["id"]}]})
    assert op["status"] == "succeeded", op
    server = cloud.call("GET", "/v1/instances/smart")
    assert server["node"] == "dpu-bm-1"  # the only node with the trait and a remote-managed VF
    (vf,) = server["pci_requests"][0]["devices"]
    profile = cloud.call("GET", f"/v1/ports/{port['id']}")["binding_profile"]
    assert profile["pci_vendor_info"] == "15b3:101e" and profile["pci_slot"] == vf["address"]
    assert profile["physical_network"] == "physnet1" and profile["card_serial_number"] == "MT0001"
    assert profile["vf_num"] == vf["vf_num"] and profile["pf_mac_address"] == vf["pf_mac"]
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["requested_chassis"] == "dpu-bm-1"
    # The DPU can find the representor from what the port carries.
    representor = cloud.router.agents["dpu-bm-1"].get(
        "/v1/representors", params={"pf_mac": profile["pf_mac_address"], "vf_num": profile["vf_num"]}).json()
    assert representor["representor"] == f"pf{representor['pfnum']}vf{profile['vf_num']}"


def test_remote_managed_ports_need_a_node_with_the_trait(bf2_cloud):
    cloud = bf2_cloud
    op = cloud.build("pinned", node="dpu-bm-2", networks=[{"network": "net1", "vnic_type": "remote-managed"}])
    assert op["status"] == "failed" and "missing a required trait" in op["error"]


def test_a_claimed_vf_makes_its_pf_unclaimable_until_freed(bf2_cloud):
    cloud = bf2_cloud
    assert cloud.build("smart", networks=[{"network": "net1", "vnic_type": "remote-managed"}],
                       node="dpu-bm-1")["status"] == "succeeded"
    devices = {d["address"]: d for d in cloud.call("GET", "/v1/pci/devices?node=dpu-bm-1")}
    (taken,) = [d for d in devices.values() if d["status"] == "allocated"]
    assert devices[taken["parent_addr"]]["status"] == "unavailable"
    assert cloud.act("DELETE", "/v1/instances/smart")["status"] == "succeeded"
    assert {d["status"] for d in cloud.call("GET", "/v1/pci/devices?node=dpu-bm-1")} == {"available"}


def test_a_device_dropped_from_the_config_while_allocated_is_kept_until_freed(bf2_cloud):
    cloud = bf2_cloud
    cloud.build("smart", networks=[{"network": "net1", "vnic_type": "remote-managed"}], node="dpu-bm-1")
    (taken,) = [d for d in cloud.call("GET", "/v1/pci/devices") if d["status"] == "allocated"]
    status = cloud.router.agents["dpu-bm-1"].get("/v1/status").json()
    status["pci_devices"] = [d for d in status["pci_devices"] if d["address"] != taken["address"]]
    report = {k: status[k] for k in ("hostname", "ready", "node_type", "dpu_model", "total_cpu", "used_cpu",
                                     "total_mem", "used_mem", "instances", "agent_url", "pci_flavor_attrs",
                                     "pci_devices", "pci_pools", "traits", "dpus")}
    cloud.call("POST", "/v1/nodes/report", report, token=cloud.agent_token())
    kept = {d["address"]: d for d in cloud.call("GET", "/v1/pci/devices")}[taken["address"]]
    assert kept["status"] == "allocated" and kept["removed"] and kept["instance_id"] == taken["instance_id"]
    assert cloud.act("DELETE", "/v1/instances/smart")["status"] == "succeeded"
    assert taken["address"] not in {d["address"] for d in cloud.call("GET", "/v1/pci/devices")}


def test_malformed_pci_bodies_are_400s_naming_the_field(cloud):
    project = cloud.call("GET", "/v1/whoami")["project_id"]
    answer = cloud.api.post(f"/v2/{project}/os-pci-flavors", json={"pci-flavor": {"name": 5}})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "pci-flavor.name"
    answer = cloud.api.post(f"/v2/{project}/os-pci-flavors", json={"flavor": {}})
    assert answer.status_code == 400
    answer = cloud.api.put("/v1/pci-flavors/x", json={"action": "update", "pci-flavor": {"vendor_id": 8086}})
    assert answer.status_code in (400, 404)
    cloud.call("POST", "/v1/pci-flavors", {"name": "x"}, expect=201)
    answer = cloud.api.put("/v1/pci-flavors/x", json={"action": "update", "pci-flavor": {"vendor_id": 8086}})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "pci-flavor.vendor_id"
    report = {"hostname": "n", "ready": True, "node_type": "bm", "total_cpu": 1, "used_cpu": 0, "total_mem": 1,
              "used_mem": 0, "agent_url": "http://n", "pci_devices": [{"address": "0000:01:00.0",
                                                                      "vendor_id": "XYZ", "product_id": "0001",
                                                                      "dev_type": "type-PCI"}]}
    answer = cloud.api.post("/v1/nodes/report", json=report, headers={"Authorization": f"Bearer {cloud.agent_token()}"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "pci_devices.0.vendor_id"
