"""A VM whose flavor asks a PCI device moves with its device asked again on the target: the target's device is
claimed before anything stops and passed to the new domain, the source's freed on the confirm; a target that
has no such device is refused, saying why, before anything changes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dpustack.lab import pcitrees
from faults import assert_clean
from moves import CELLS

NO_BM_NODES = pytest.mark.parametrize("cloud", [0], indirect=True)
GPU_FILTER = [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}, "extra": {"e.group": "gpu"}}]


def _vm_node(cloud, hostname: str, gpus: list[str]) -> None:
    cards = [pcitrees.gpu(address, "0001") for address in gpus]
    cloud.add_node(hostname, vm_cells=CELLS, cards=cards,
                   pci={"information": GPU_FILTER, "flavor_attrs": ["vendor_id", "product_id", "extra_info"]})


@pytest.fixture
def gpu_nodes(cloud):
    """dpu-vm-1 and dpu-vm-2 with a GPU each, dpu-vm-3 without, and vm.gpu asking one GPU; v1 on dpu-vm-1."""
    _vm_node(cloud, "dpu-vm-1", ["0000:af:00.0"])
    _vm_node(cloud, "dpu-vm-2", ["0000:b0:00.0"])
    _vm_node(cloud, "dpu-vm-3", [])
    cloud.setup_basics()
    cloud.call("POST", "/v1/pci-flavors", {"name": "gpu", "description": "GPUs"}, expect=201)
    cloud.call("PUT", "/v1/pci-flavors/gpu", {"action": "update", "pci-flavor": {"e.group": "gpu"}})
    cloud.call("POST", "/v1/flavors", {"name": "vm.gpu", "vcpus": 2, "ram": 1024, "disk": 1, "type": "vm"},
               expect=201)
    cloud.call("PUT", "/v1/flavors/vm.gpu/extra-specs", {"pci_passthrough:pci_flavor": "1:gpu"})
    op = cloud.act("POST", "/v1/instances", {"name": "v1", "flavor": "vm.gpu", "node": "dpu-vm-1",
                                             "networks": [{"network": "net1"}]})
    assert op["status"] == "succeeded", op
    return cloud


def _devices(cloud) -> dict[str, str]:
    """address -> status of every PCI device the cloud knows."""
    return {d["address"]: d["status"] for d in cloud.call("GET", "/v1/pci/devices")}


def _hostdev_addresses(cloud, hostname: str, uuid: str) -> set[str]:
    xml = ET.fromstring(cloud.drivers(hostname).hypervisor.held[uuid].xml)
    found = set()
    for source in xml.iterfind("devices/hostdev/source/address"):
        found.add(f"{int(source.get('domain'), 16):04x}:{int(source.get('bus'), 16):02x}:"
                  f"{int(source.get('slot'), 16):02x}.{int(source.get('function'), 16)}")
    return found


@NO_BM_NODES
def test_a_vm_with_a_gpu_gets_the_targets_gpu_and_frees_its_own_on_the_confirm(gpu_nodes):
    cloud = gpu_nodes
    uuid = cloud.call("GET", "/v1/instances/v1")["id"]
    assert _devices(cloud) == {"0000:af:00.0": "allocated", "0000:b0:00.0": "available"}

    op = cloud.act("POST", "/v1/instances/v1/migrate", {})  # dpu-vm-3 has no GPU: the scheduler takes dpu-vm-2

    assert op["status"] == "succeeded", op
    assert op["steps"][0]["detail"]["pci_devices"] == ["0000:b0:00.0"]
    assert cloud.call("GET", "/v1/instances/v1")["node"] == "dpu-vm-2"
    assert "0000:b0:00.0" in _hostdev_addresses(cloud, "dpu-vm-2", uuid)
    assert _devices(cloud) == {"0000:af:00.0": "allocated", "0000:b0:00.0": "allocated"}  # both until the confirm
    assert_clean(cloud, "dpu-vm-1")
    cloud.call("POST", "/v1/instances/v1/migrate-confirm")
    assert _devices(cloud) == {"0000:af:00.0": "available", "0000:b0:00.0": "allocated"}

    refused = cloud.api.post("/v1/instances/v1/migrate", json={"node": "dpu-vm-3"})

    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "node" and "cannot migrate 'v1' to node dpu-vm-3 with flavor 'vm.gpu'" in error["message"]
    assert "not enough free PCI devices for the requests" in error["message"]
    assert _devices(cloud) == {"0000:af:00.0": "available", "0000:b0:00.0": "allocated"}
    assert cloud.call("GET", "/v1/instances/v1")["status"] == "ACTIVE"
    live = cloud.api.post("/v1/instances/v1/migrate", json={"live": True})
    assert live.status_code == 409 and live.json()["error"]["field"] == "instance", live.text
    assert "has PCI devices passed through: they cannot be unplugged" in live.json()["error"]["message"]
    assert _devices(cloud) == {"0000:af:00.0": "available", "0000:b0:00.0": "allocated"}


@NO_BM_NODES
def test_a_revert_gives_the_vm_its_own_gpu_again_and_frees_the_targets(gpu_nodes):
    cloud = gpu_nodes
    uuid = cloud.call("GET", "/v1/instances/v1")["id"]
    assert cloud.act("POST", "/v1/instances/v1/migrate", {"node": "dpu-vm-2"})["status"] == "succeeded"

    assert cloud.act("POST", "/v1/instances/v1/migrate-revert")["status"] == "succeeded"

    assert cloud.call("GET", "/v1/instances/v1")["node"] == "dpu-vm-1"
    assert "0000:af:00.0" in _hostdev_addresses(cloud, "dpu-vm-1", uuid)
    assert _devices(cloud) == {"0000:af:00.0": "allocated", "0000:b0:00.0": "available"}
    assert_clean(cloud, "dpu-vm-2")
