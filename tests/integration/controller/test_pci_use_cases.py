"""Seed 003's use cases, from an agent's device filters to an allocated device, through the controller API."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from dpustack.lab import pcitrees
from harness import Cloud

V1, V2 = pcitrees.ENCRYPTION_VENDORS["V1"], pcitrees.ENCRYPTION_VENDORS["V2"]
GPUS = [pcitrees.gpu("0000:af:00.0", "0001"), pcitrees.gpu("0000:b0:00.0", "0002")]


@pytest.fixture
def make_cloud(tmp_path, database_url) -> Iterator[Any]:
    clouds: list[Cloud] = []

    def make(cards, information, flavor_attrs, *, nodes: int = 1) -> Cloud:
        cloud = Cloud(tmp_path, database_url, nodes=0)
        clouds.append(cloud)
        for index in range(1, nodes + 1):
            cloud.add_node(f"dpu-bm-{index}", cards=cards(index) if callable(cards) else cards,
                           pci={"information": information, "flavor_attrs": flavor_attrs})
        cloud.setup_basics()
        return cloud

    yield make
    for cloud in clouds:
        cloud.close()


def _pci_flavor(cloud, name, **spec):
    cloud.call("POST", "/v1/pci-flavors", {"name": name, "description": f"{name} devices"}, expect=201)
    return cloud.call("PUT", f"/v1/pci-flavors/{name}", {"action": "update", "pci-flavor": spec})


def _flavor(cloud, name, pci_spec):
    cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": 2, "ram": 2048, "disk": 1, "type": "bm"})
    cloud.call("PUT", f"/v1/flavors/{name}/extra-specs", {"pci_passthrough:pci_flavor": pci_spec})


def _boot(cloud, name, flavor, **extra):
    body = {"name": name, "flavor": flavor, "image": "centos", "networks": [{"network": "net1"}], **extra}
    return cloud.act("POST", "/v1/instances", body)


def _devices(cloud, name):
    server = cloud.call("GET", f"/v1/instances/{name}")
    return [(d["vendor_id"], d["product_id"]) for r in server["pci_requests"] for d in r["devices"]]


def _pools(cloud):
    pools = [(p["attrs"], p["count"], p["free"]) for p in cloud.call("GET", "/v1/pci/pools")]
    return sorted(pools, key=lambda pool: sorted(pool[0].items()))


def test_general_passthrough_allocates_the_gpu_and_frees_it_on_delete(make_cloud):
    cloud = make_cloud(GPUS[:1], [{"match": {"vendor_id": "8086", "product_id": "0001"}}],
                       ["vendor_id", "product_id"])
    assert _pools(cloud) == [({"vendor_id": "8086", "product_id": "0001"}, 1, 1)]
    _pci_flavor(cloud, "bigGPU", vendor_id="8086", product_id="0001")
    _flavor(cloud, "m1.small", "1:bigGPU;")
    assert _boot(cloud, "mytest", "m1.small")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/mytest")
    (request,) = server["pci_requests"]
    assert request["count"] == 1 and request["flavors"] == ["bigGPU"] and request["source"] == "flavor"
    assert [d["address"] for d in request["devices"]] == ["0000:af:00.0"]
    device = cloud.call("GET", "/v1/pci/devices")[0]
    assert device["status"] == "allocated" and device["instance_id"] == server["id"]
    assert device["request_id"] == request["id"]
    agent_view = cloud.router.agents["dpu-bm-1"].get(f"/v1/instances/{server['id']}").json()
    assert agent_view["pci_devices"] == [{"address": "0000:af:00.0", "request_id": request["id"]}]
    assert cloud.act("DELETE", "/v1/instances/mytest")["status"] == "succeeded"
    assert cloud.call("GET", "/v1/pci/devices")[0]["status"] == "available"


def test_multiple_flavor_candidates_take_either_gpu_until_none_is_left(make_cloud):
    cloud = make_cloud(GPUS, [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}}],
                       ["vendor_id", "product_id"], nodes=2)
    pools = cloud.call("GET", "/v1/pci/pools")
    assert sorted((p["node"], p["attrs"]["product_id"], p["count"]) for p in pools) == [
        ("dpu-bm-1", "0001", 1), ("dpu-bm-1", "0002", 1), ("dpu-bm-2", "0001", 1), ("dpu-bm-2", "0002", 1)]
    _pci_flavor(cloud, "bigGPU", vendor_id="8086", product_id="0001")
    _pci_flavor(cloud, "bigGPU2", vendor_id="8086", product_id="0002")
    cloud.call("POST", "/v1/flavors", {"name": "m1.gpu", "vcpus": 2, "ram": 2048, "disk": 1, "type": "bm"})
    cloud.call("PUT", "/v1/flavors/m1.gpu/extra-specs", {"pci_passthrough:pci_flavor": "2:bigGPU,bigGPU2;"})
    assert _boot(cloud, "a", "m1.gpu")["status"] == "succeeded"
    assert sorted(_devices(cloud, "a")) == [("8086", "0001"), ("8086", "0002")]


def test_a_wildcard_flavor_matches_both_gpus(make_cloud):
    cloud = make_cloud(GPUS, [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}}],
                       ["vendor_id", "product_id"])
    _pci_flavor(cloud, "bigGPU", vendor_id="8086", product_id="000[1-2]")
    _flavor(cloud, "m1.two", "2:bigGPU")
    assert _boot(cloud, "both", "m1.two")["status"] == "succeeded"
    assert sorted(_devices(cloud, "both")) == [("8086", "0001"), ("8086", "0002")]


def test_a_grouping_tag_makes_one_pool_of_both_gpus(make_cloud):
    cloud = make_cloud(GPUS, [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}, "extra": {"e.group": "gpu"}}],
                       ["e.group"])
    assert _pools(cloud) == [({"e.group": "gpu"}, 2, 2)]
    assert cloud.call("GET", "/v1/pci-flavors/0")["spec"] == {"e.group": "True"}
    _pci_flavor(cloud, "bigGPU", **{"e.group": "gpu"})
    _flavor(cloud, "m1.small", "1:bigGPU;")
    assert _boot(cloud, "g", "m1.small")["status"] == "succeeded"
    assert len(_devices(cloud, "g")) == 1
    assert _pools(cloud) == [({"e.group": "gpu"}, 2, 1)]


def test_an_sriov_nic_on_a_tagged_physical_network_gets_a_vf(make_cloud):
    cloud = make_cloud([pcitrees.intel_x710()],
                       [{"match": {"vendor_id": "8086", "product_id": "154c"},
                         "extra": {"e.physical_network": "X"}}], ["e.physical_network"])
    assert _pools(cloud) == [({"e.physical_network": "X"}, 4, 4)]
    _pci_flavor(cloud, "phyX_NIC", **{"e.physical_network": "X"})
    cloud.call("POST", "/v1/flavors", {"name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "type": "bm"})
    op = cloud.act("POST", "/v1/instances", {"name": "mytest", "flavor": "m1.tiny", "image": "centos",
                                             "networks": [{"network": "net1", "pci_flavor": "1:phyX_NIC"}]})
    assert op["status"] == "succeeded", op
    server = cloud.call("GET", "/v1/instances/mytest")
    (request,) = server["pci_requests"]
    assert request["source"] == "nic" and request["nic_index"] == 0
    (vf,) = request["devices"]
    assert vf["dev_type"] == "type-VF" and vf["vf_num"] is not None
    port = cloud.call("GET", f"/v1/ports/{server['ports'][0]}")
    assert port["binding_profile"]["pci_slot"] == vf["address"]
    assert port["binding_profile"]["pci_vendor_info"] == "8086:154c"
    assert port["requested_chassis"] == ""  # a plain SR-IOV port: the host plugs it


def test_encryption_cards_by_qa_class(make_cloud):
    information = [{"match": {"vendor_id": V1, "product_id": "0xa"}, "extra": {"e.QAclass": "1"}},
                   {"match": {"vendor_id": V1, "product_id": "0xb"}, "extra": {"e.QAclass": "2"}},
                   {"match": {"vendor_id": V2, "product_id": "0xb"}, "extra": {"e.QAclass": "3"}}]
    cloud = make_cloud(pcitrees.encryption_cards(), information, ["e.QAclass"])
    assert _pools(cloud) == [({"e.QAclass": "1"}, 1, 1), ({"e.QAclass": "2"}, 1, 1), ({"e.QAclass": "3"}, 1, 1)]
    _pci_flavor(cloud, "QA1", **{"e.QAclass": "1"})
    _pci_flavor(cloud, "QA13", **{"e.QAclass": "(1|3)"})
    _flavor(cloud, "qa.three", "3:QA13")
    op = _boot(cloud, "greedy", "qa.three")
    assert op["status"] == "failed" and "not enough free PCI devices" in op["error"]
    _flavor(cloud, "qa.two", "2:QA13")
    assert _boot(cloud, "both", "qa.two")["status"] == "succeeded"
    assert sorted(_devices(cloud, "both")) == [(V1, "000a"), (V2, "000b")]
    assert cloud.act("DELETE", "/v1/instances/both")["status"] == "succeeded"
    _flavor(cloud, "qa.one", "1:QA1")
    assert _boot(cloud, "one", "qa.one")["status"] == "succeeded"
    assert _devices(cloud, "one") == [(V1, "000a")]


# A DPU host: the BlueField's VFs are its DPU's (remote-managed), its PFs are offered whole; the Intel port
# offers its VFs by naming the PF's address with the VFs' product id, and the PF itself by its address.
DPU_HOST_FILTERS = [
    {"match": {"vendor_id": "15b3", "product_id": "101e"},
     "extra": {"physical_network": "physnet1", "remote_managed": True}},
    {"match": {"vendor_id": "15b3", "product_id": "a2d6"}},
    {"match": {"address": "0000:3b:00.0", "product_id": "154c"}, "extra": {"physical_network": "physnet2"}},
    {"match": {"address": "0000:3b:00.0"}},
]


def _only_device(cloud, name):
    (request,) = cloud.call("GET", f"/v1/instances/{name}")["pci_requests"]
    return [(d["vendor_id"], d["product_id"], d["dev_type"]) for d in request["devices"]]


def test_dpu_vfs_go_only_to_remote_managed_requests_and_pfs_only_to_dev_type(make_cloud):
    cloud = make_cloud([pcitrees.bluefield2("MT0001"), pcitrees.intel_x710()], DPU_HOST_FILTERS,
                       ["vendor_id", "product_id", "extra_info"])
    pools = {(p["attrs"]["product_id"], p["dev_type"]): p for p in cloud.call("GET", "/v1/pci/pools")}
    assert pools[("154c", "type-VF")]["count"] == 4 and pools[("1572", "type-PF")]["count"] == 1
    assert pools[("154c", "type-VF")]["attrs"]["physical_network"] == "physnet2"
    assert pools[("154c", "type-VF")]["attrs"]["remote_managed"] == "false"  # untagged: not remote-managed

    # Any Mellanox or Intel device: neither a DPU's VF nor a PF, though both match the ids.
    _pci_flavor(cloud, "anyNIC", vendor_id="(15b3|8086)")
    _flavor(cloud, "m1.nic", "1:anyNIC")
    assert _boot(cloud, "nic", "m1.nic")["status"] == "succeeded"
    assert _only_device(cloud, "nic") == [("8086", "154c", "type-VF")]
    assert cloud.act("DELETE", "/v1/instances/nic")["status"] == "succeeded"

    # Mellanox VFs without asking for remote-managed ones: there are none to give.
    _pci_flavor(cloud, "mlxVF", vendor_id="15b3", dev_type="type-VF")
    _flavor(cloud, "m1.mlx", "1:mlxVF")
    op = _boot(cloud, "mlx", "m1.mlx")
    assert op["status"] == "failed" and "not enough free PCI devices" in op["error"]
    assert cloud.act("DELETE", "/v1/instances/mlx")["status"] == "succeeded"

    # A whole PF by dev_type, with two VFs on physnet2 (tags compare case-insensitively).
    _pci_flavor(cloud, "wholePF", vendor_id="15b3", dev_type="type-PF")
    _pci_flavor(cloud, "phy2VF", physical_network="PHYSNET2")
    _flavor(cloud, "m1.pfvf", "1:wholePF;2:phy2VF")
    assert _boot(cloud, "pfvf", "m1.pfvf")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/pfvf")
    got = [[(d["product_id"], d["dev_type"]) for d in r["devices"]] for r in server["pci_requests"]]
    assert got == [[("a2d6", "type-PF")], [("154c", "type-VF"), ("154c", "type-VF")]]
    assert cloud.act("DELETE", "/v1/instances/pfvf")["status"] == "succeeded"

    # A remote-managed port still gets one of the DPU's VFs.
    op = cloud.act("POST", "/v1/instances", {"name": "smart", "flavor": "bm.small", "image": "centos",
                                             "networks": [{"network": "net1", "vnic_type": "remote-managed"}]})
    assert op["status"] == "succeeded", op
    assert _only_device(cloud, "smart") == [("15b3", "101e", "type-VF")]
