"""PCI flavors and remote-managed ports on VMs, through the real controller API and a real agent of a vm node
(its host the memory hypervisor driver, its PCI tree generated): the device allocated and passed to the
domain by its BDF, near its NUMA cell when the flavor says so, freed on delete and on a failed build; a
remote-managed NIC's VF passed through with its port's MAC, its representor plugged on the node's DPU and the
port bound as on bare metal; the requests no node can meet, and the NIC changes refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from dpustack.lab import pcitrees
from harness import BF2_FILTER

NO_BM_NODES = pytest.mark.parametrize("cloud", [0], indirect=True)
ONE_BM_NODE = pytest.mark.parametrize("cloud", [1], indirect=True)
CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}, {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192}]
GPU_FILTER = [{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}, "extra": {"e.group": "gpu"}}]
SERIAL = "MT2146X00001"
NODE = "dpu-vm-1"


def _vm_node(cloud, hostname: str = NODE, *, gpus: bool = True) -> None:
    """A vm node with a BlueField-2 (serial MT2146X00001, remote-managed VFs on physnet1) and, if `gpus`, the
    lab's two GPUs (seed 003's 8086:0001 and 0002) on NUMA node 1, as lab node 2 has them."""
    cards = [pcitrees.bluefield2(SERIAL)]
    if gpus:
        cards += [pcitrees.gpu("0000:af:00.0", "0001"), pcitrees.gpu("0000:b0:00.0", "0002")]
    cloud.add_node(hostname, vm_cells=CELLS, cards=cards,
                   pci={"information": BF2_FILTER + GPU_FILTER, "flavor_attrs": ["vendor_id", "product_id",
                                                                                 "extra_info"]})


def _pci_flavor(cloud, name: str, **spec: str) -> None:
    cloud.call("POST", "/v1/pci-flavors", {"name": name, "description": f"{name} devices"}, expect=201)
    cloud.call("PUT", f"/v1/pci-flavors/{name}", {"action": "update", "pci-flavor": spec})


def _flavor(cloud, name: str, *, type_: str = "vm", vcpus: int = 2, ram: int = 1024, **specs: str) -> None:
    cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": vcpus, "ram": ram, "disk": 1, "type": type_},
               expect=201)
    if specs:
        cloud.call("PUT", f"/v1/flavors/{name}/extra-specs", specs)


@pytest.fixture
def gpu_cloud(cloud):
    """dpu-vm-1 (a BlueField and two GPUs), the basics, the PCI flavor `gpu` (the lab's gpu group) and the vm
    flavor vm.gpu asking for one."""
    _vm_node(cloud)
    cloud.setup_basics()
    _pci_flavor(cloud, "gpu", **{"e.group": "gpu"})
    _flavor(cloud, "vm.gpu", **{"pci_passthrough:pci_flavor": "1:gpu"})
    return cloud


def _boot(cloud, name: str, flavor: str, networks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return cloud.act("POST", "/v1/instances", {"name": name, "flavor": flavor,
                                               "networks": networks if networks is not None else []})


def _domain(cloud, server: dict[str, Any]) -> ET.Element:
    """The definition the node's hypervisor holds for the server."""
    return ET.fromstring(cloud.drivers(NODE).hypervisor.held[server["id"]].xml)


def _in_slots(domain: ET.Element) -> dict[str, tuple[str, str | None, tuple[int, ...], int]]:
    """alias -> (element, type, host BDF as (domain, bus, slot, function), guest bus) of each passed device."""
    found = {}
    for element in domain.find("devices"):
        alias, source = element.find("alias"), element.find("source/address")
        if element.tag == "controller" or alias is None or source is None:
            continue
        bdf = tuple(int(source.get(k), 16) for k in ("domain", "bus", "slot", "function"))
        found[alias.get("name")] = (element.tag, element.get("type"), bdf, int(element.find("address").get("bus"), 16))
    return found


def _device_statuses(cloud) -> dict[str, str]:
    return {d["address"]: d["status"] for d in cloud.call("GET", f"/v1/pci/devices?node={NODE}")}


# ------------------------------------------------------------------------------------------- PCI flavors
@NO_BM_NODES
def test_a_vm_flavors_gpu_is_allocated_passed_to_the_domain_by_its_bdf_and_freed_on_delete(gpu_cloud):
    cloud = gpu_cloud

    op = _boot(cloud, "v1", "vm.gpu", [{"network": "net1"}])

    assert op["status"] == "succeeded", op
    server = cloud.call("GET", "/v1/instances/v1")
    (request,) = server["pci_requests"]
    (gpu,) = request["devices"]
    assert (server["node"], request["source"], gpu["status"], gpu["extra_info"]) == (
        NODE, "flavor", "allocated", {"e.group": "gpu"})
    slots = _in_slots(_domain(cloud, server))
    bdf = tuple(int(x, 16) for x in gpu["address"].replace(".", ":").split(":"))
    # the NIC's net function first (slot 0, guest bus 1), the GPU after it, a VFIO hostdev of its host BDF
    assert slots["ua-pci0"] == ("hostdev", "pci", bdf, 2)
    assert slots[f"ua-net-{server['ports'][0]}"][:2] == ("hostdev", "pci")
    agent_view = cloud.router.agents[NODE].get(f"/v1/instances/{server['id']}").json()
    assert agent_view["pci_devices"] == [{"address": gpu["address"], "request_id": request["id"]}]
    pools = [p for p in cloud.call("GET", "/v1/pci/pools") if p["attrs"].get("e.group") == "gpu"]
    assert [sum(p[k] for p in pools) for k in ("count", "free", "used")] == [2, 1, 1]

    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"

    assert _device_statuses(cloud)[gpu["address"]] == "available"
    assert server["id"] not in cloud.drivers(NODE).hypervisor.held


@NO_BM_NODES
def test_a_failed_vm_build_frees_its_gpu_and_leaves_no_domain(gpu_cloud):
    cloud = gpu_cloud
    cloud.drivers(NODE).hypervisor.faults.arm("start")

    op = _boot(cloud, "v1", "vm.gpu")

    assert op["status"] == "failed" and "injected fault" in op["error"], op
    server = cloud.call("GET", "/v1/instances/v1")
    assert server["status"] == "ERROR" and server["node"] is None
    assert set(_device_statuses(cloud).values()) == {"available"}
    assert cloud.drivers(NODE).hypervisor.held == {}
    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"
    assert _boot(cloud, "v2", "vm.gpu")["status"] == "succeeded"  # the GPU can be had again


@NO_BM_NODES
def test_the_vm_is_placed_in_the_numa_cell_of_its_gpu_and_required_affinity_is_a_409_when_that_cell_is_full(
        gpu_cloud):
    cloud = gpu_cloud  # both GPUs are on host cell 1; cell 0 has as much room

    assert _boot(cloud, "near", "vm.gpu")["status"] == "succeeded"  # legacy: the devices' cells too
    near = cloud.call("GET", "/v1/instances/near")
    assert [c["host_cell"] for c in near["numa_placement"]["cells"]] == [1]
    assert _domain(cloud, near).find("numatune/memory").get("nodeset") == "1"

    _flavor(cloud, "vm.two-cells", vcpus=4, ram=2048, **{"hw:numa_nodes": "2"})
    assert _boot(cloud, "filler", "vm.two-cells")["status"] == "succeeded"
    filler = cloud.call("GET", "/v1/instances/filler")
    assert sorted(c["host_cell"] for c in filler["numa_placement"]["cells"]) == [0, 1]
    # cell 1's 4 CPUs are taken (2 + 2): `required` cannot be met there, `preferred` goes to cell 0
    _flavor(cloud, "vm.gpu.required", **{"pci_passthrough:pci_flavor": "1:gpu",
                                          "hw:pci_numa_affinity_policy": "required"})
    _flavor(cloud, "vm.gpu.preferred", **{"pci_passthrough:pci_flavor": "1:gpu",
                                           "hw:pci_numa_affinity_policy": "preferred"})

    refused = _boot(cloud, "far", "vm.gpu.required")

    assert refused["status"] == "failed", refused
    assert "1 not enough room in the NUMA cells" in refused["error"]
    assert "PCI devices are on cell 1" in refused["error"], refused["error"]
    assert _device_statuses(cloud)["0000:b0:00.0"] == "available"  # nothing held by the refused server
    assert _boot(cloud, "elsewhere", "vm.gpu.preferred")["status"] == "succeeded"
    elsewhere = cloud.call("GET", "/v1/instances/elsewhere")
    assert [c["host_cell"] for c in elsewhere["numa_placement"]["cells"]] == [0]


# ---------------------------------------------------------------------------------- remote-managed ports
@NO_BM_NODES
def test_a_remote_managed_nic_of_a_vm_is_its_vf_passed_through_with_the_representor_plugged_and_bound(cloud):
    _vm_node(cloud, gpus=False)
    cloud.setup_basics()
    _flavor(cloud, "vm.small")
    port = cloud.call("POST", "/v1/ports", {"network": "net1", "vnic_type": "remote-managed"}, expect=201)

    op = _boot(cloud, "smart", "vm.small", [{"network": "net1"}, {"port": port["id"]}])

    assert op["status"] == "succeeded", op
    server = cloud.call("GET", "/v1/instances/smart")
    (request,) = server["pci_requests"]
    (vf,) = request["devices"]
    assert (request["source"], request["nic_index"], vf["dev_type"], vf["extra_info"]["remote_managed"]) == (
        "nic", 1, "type-VF", "true")
    port = cloud.call("GET", f"/v1/ports/{port['id']}")
    profile = port["binding_profile"]
    assert (profile["pci_slot"], profile["pci_vendor_info"], profile["physical_network"]) == (
        vf["address"], "15b3:101e", "physnet1")
    assert (profile["card_serial_number"], profile["pf_mac_address"], profile["vf_num"]) == (
        SERIAL, vf["pf_mac"], vf["vf_num"])
    assert (port["binding_host_id"], port["requested_chassis"]) == (NODE, NODE)  # the DPU of card MT2146X00001
    # the domain: the normal NIC's net function in slot 0, the VF as a hostdev interface with the port's MAC
    domain = _domain(cloud, server)
    bdf = tuple(int(x, 16) for x in vf["address"].replace(".", ":").split(":"))
    assert _in_slots(domain)[f"ua-vf-{port['id']}"] == ("interface", "hostdev", bdf, 2)
    interface = domain.find("devices/interface[@type='hostdev']")
    assert interface.find("mac").get("address") == port["mac_address"]
    assert len(domain.findall("devices/hostdev")) == 1  # only the normal NIC's function: the VF is not twice
    # the DPU plugged the VF's representor (pf<N>vf<M>) as the port, and made no function for it
    switch = {p.name: p for p in cloud.drivers(NODE).switch.list_ports("br-int")}
    representor = cloud.router.agents[NODE].get(
        "/v1/representors", params={"pf_mac": vf["pf_mac"], "vf_num": vf["vf_num"]}).json()["representor"]
    assert representor == f"pf0vf{vf['vf_num']}" or representor == f"pf1vf{vf['vf_num']}"
    assert switch[representor].external_ids["iface-id"] == port["id"]
    assert switch[representor].external_ids["attached-mac"] == port["mac_address"]
    (normal,) = [p for p in server["ports"] if p != port["id"]]
    assert [f.id for f in cloud.drivers(NODE).functions.list()] == [f"net-{normal}"]
    assert _in_slots(domain)[f"ua-net-{normal}"][::3] == ("hostdev", 1)
    nic = next(n for n in cloud.call("GET", "/v1/instances/smart")["nics"] if n["port_id"] == port["id"])
    assert nic["bdf"] == vf["address"]

    assert cloud.act("DELETE", "/v1/instances/smart")["status"] == "succeeded"

    assert representor not in {p.name for p in cloud.drivers(NODE).switch.list_ports("br-int")}
    assert _device_statuses(cloud)[vf["address"]] == "available"
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["binding_host_id"] == ""


# ------------------------------------------------------------------------------------------------ bad input
@ONE_BM_NODE
def test_a_vm_flavor_asking_for_a_device_only_bare_metal_has_fails_scheduling_naming_the_request(cloud):
    cloud.add_node("dpu-bm-gpu", cards=[pcitrees.gpu("0000:af:00.0", "0001")], pci={"information": GPU_FILTER})
    _vm_node(cloud, gpus=False)  # a BlueField only
    cloud.setup_basics()
    _pci_flavor(cloud, "gpu", **{"e.group": "gpu"})
    _flavor(cloud, "vm.gpu", **{"pci_passthrough:pci_flavor": "1:gpu"})

    op = _boot(cloud, "v1", "vm.gpu")

    assert op["status"] == "failed", op
    (step,) = [s for s in op["steps"] if s["status"] == "failed"]
    assert step["name"] == "schedule"
    assert op["error"] == (
        "schedule: no valid node for a vm node with 2 CPU / 1024 MiB: 2 wrong node type, 1 not enough free PCI "
        "devices for the requests; on dpu-vm-1, the closest: no free PCI device for the request "
        "flavor.pci_passthrough:pci_flavor 1:gpu (10 free on the node)")
    server = cloud.call("GET", "/v1/instances/v1")
    assert server["status"] == "ERROR" and server["fault"]["step"] == "schedule"
    assert {d["address"]: d["status"] for d in cloud.call("GET", "/v1/pci/devices?node=dpu-bm-gpu")} == {
        "0000:af:00.0": "available"}  # the bare-metal node's GPU is not a VM's


@NO_BM_NODES
def test_a_remote_managed_nic_on_a_vm_node_without_dpu_vfs_fails_naming_the_nic(cloud):
    cloud.add_node("dpu-vm-2", vm_cells=CELLS, cards=[pcitrees.gpu()], pci={"information": GPU_FILTER})
    cloud.setup_basics()
    _flavor(cloud, "vm.small")

    op = _boot(cloud, "v1", "vm.small", [{"network": "net1", "vnic_type": "remote-managed"}])

    assert op["status"] == "failed", op
    assert "1 missing a required trait" in op["error"]  # COMPUTE_REMOTE_MANAGED_PORTS: no remote-managed VF


@NO_BM_NODES
def test_remote_managed_nics_of_a_vm_are_neither_added_nor_removed_later(cloud):
    _vm_node(cloud, gpus=False)
    cloud.setup_basics()
    _flavor(cloud, "vm.small")
    assert _boot(cloud, "smart", "vm.small", [{"network": "net1", "vnic_type": "remote-managed"}])[
        "status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/smart")
    (port_id,) = server["ports"]
    spare = cloud.call("POST", "/v1/ports", {"network": "net1", "vnic_type": "remote-managed"}, expect=201)

    added = cloud.api.post("/v1/instances/smart/nics", json={"port": spare["id"]})
    removed = cloud.api.delete(f"/v1/instances/smart/nics/{port_id}")

    assert added.status_code == 400 and added.json()["error"]["field"] == "vnic_type", added.text
    assert removed.status_code == 409, removed.text
    assert removed.json()["error"] == {
        "code": "conflict", "field": "port_id",
        "message": f"port {port_id} is a remote-managed NIC of 'smart': it stays until the server is deleted"}
    assert [o["action"] for o in cloud.call("GET", f"/v1/operations?instance={server['id']}")] == ["create"]
    assert len(cloud.drivers(NODE).hypervisor.held[server["id"]].config) == 1  # the VF, still there


@NO_BM_NODES
def test_a_vf_whose_card_another_nodes_dpu_runs_fails_the_build_naming_the_port_and_frees_the_vf(cloud):
    _vm_node(cloud, gpus=False)
    # a second node that sees the same card claims its DPU (the controller keeps the last report's)
    cloud.add_node("dpu-vm-2", vm_cells=CELLS, cards=[pcitrees.bluefield2(SERIAL)], pci={"information": BF2_FILTER})
    cloud.setup_basics()
    _flavor(cloud, "vm.small")

    op = cloud.act("POST", "/v1/instances", {"name": "smart", "flavor": "vm.small", "node": NODE,
                                             "networks": [{"network": "net1", "vnic_type": "remote-managed"}]})

    assert op["status"] == "failed", op
    assert f"whose DPU is dpu-vm-2, not {NODE}'s: a VM's remote-managed NIC is plugged by its own node's DPU" \
        in op["error"]
    assert {d["status"] for d in cloud.call("GET", f"/v1/pci/devices?node={NODE}")} == {"available"}
    assert cloud.drivers(NODE).hypervisor.held == {}
