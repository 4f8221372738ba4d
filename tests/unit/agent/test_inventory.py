"""The inventory role: an agent with a [pci] section reports its devices, pools, traits and DPU."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from dpustack.agent.config import load_config
from dpustack.secrets import digest
from dpustack.agent.hardware import load_drivers
from dpustack.drivers.inventory.sysfs import SysfsInventoryDriver
from dpustack.errors import InvalidInput
from dpustack.lab import agents as lab_agents, pcitrees
from dpustack.lab.pki import LabCa

from .conftest import API_TOKEN, memory_drivers

SERIAL = "MT2146X00007"
INFORMATION = [
    {"match": {"vendor_id": "15b3", "product_id": "101e"},
     "extra": {"physical_network": "physnet1", "remote_managed": True}},
    {"match": {"vendor_id": "8086", "product_id": "000[1-2]"}, "extra": {"e.group": "gpu"}},
]


@pytest.fixture
def node_tree(tmp_path: Path) -> pcitrees.NodeTree:
    cards = [pcitrees.bluefield2(SERIAL), pcitrees.gpu("0000:af:00.0", "0001"), pcitrees.gpu("0000:b0:00.0", "0002")]
    return pcitrees.write_node(tmp_path / "pci", cards)


@pytest.fixture
def pci_agent(start_agent, config_for, node_tree):
    config = config_for(pci={"root": str(node_tree.root), "devlink_json": str(node_tree.devlink_json),
                             "flavor_attrs": ["vendor_id", "product_id", "extra_info"],
                             "information": INFORMATION})
    drivers = dataclasses.replace(memory_drivers(),
                                  inventory=SysfsInventoryDriver(node_tree.root, node_tree.devlink_json))
    return start_agent(drivers, config)


def test_the_status_reports_offered_devices_pools_traits_and_the_dpu(pci_agent):
    status = pci_agent.get("/v1/status").json()

    assert status["ready"] is True
    assert status["pci_flavor_attrs"] == ["vendor_id", "product_id", "extra_info"]
    assert [d["address"] for d in status["pci_devices"]] == [
        "0000:05:00.3", "0000:05:00.4", "0000:05:00.5", "0000:05:00.6",
        "0000:05:02.3", "0000:05:02.4", "0000:05:02.5", "0000:05:02.6", "0000:af:00.0", "0000:b0:00.0"]
    vf = status["pci_devices"][7]
    assert (vf["card_serial_number"], vf["vf_num"], vf["parent_addr"], vf["extra_info"]) == (
        SERIAL, 3, "0000:05:00.1", {"physical_network": "physnet1", "remote_managed": "true"})
    assert status["pci_pools"] == [
        {"attrs": {"vendor_id": "15b3", "product_id": "101e", "physical_network": "physnet1",
                   "remote_managed": "true"},
         "numa_node": 0, "dev_type": "type-VF", "remote_managed": True, "count": 8},
        {"attrs": {"vendor_id": "8086", "product_id": "0001", "e.group": "gpu"}, "numa_node": 1,
         "dev_type": "type-PCI", "remote_managed": False, "count": 1},
        {"attrs": {"vendor_id": "8086", "product_id": "0002", "e.group": "gpu"}, "numa_node": 1,
         "dev_type": "type-PCI", "remote_managed": False, "count": 1}]
    assert status["traits"] == ["COMPUTE_REMOTE_MANAGED_PORTS"]
    assert status["dpus"] == [{"hostname": "dpu-node-1", "card_serial_number": SERIAL}]


def test_the_report_sent_to_the_controller_carries_the_same_pci_fields(pci_agent):
    report = pci_agent.service.node_report().body()

    assert {"pci_flavor_attrs", "pci_devices", "pci_pools", "traits", "dpus"} <= report.keys()
    assert len(report["pci_devices"]) == 10 and report["dpus"][0]["card_serial_number"] == SERIAL


def test_pci_endpoints_list_offered_devices_and_pools_with_addresses(pci_agent):
    devices = pci_agent.get("/v1/pci/devices").json()
    pools = pci_agent.get("/v1/pci/pools").json()

    assert len(devices) == 10 and all(d["dev_type"] != "type-PF" for d in devices)
    assert pools[1]["addresses"] == ["0000:af:00.0"] and pools[0]["count"] == len(pools[0]["addresses"]) == 8


def test_the_representor_of_a_host_vf_is_found_from_pf_mac_and_vf_number(pci_agent):
    pf_mac = next(d["pf_mac"] for d in pci_agent.get("/v1/pci/devices").json() if d["address"] == "0000:05:02.4")

    response = pci_agent.get("/v1/representors", params={"pf_mac": pf_mac.upper(), "vf_num": 1})

    assert response.status_code == 200
    assert response.json() == {"representor": "pf1vf1", "pfnum": 1, "vfnum": 1}


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"pf_mac": "02:00:00:00:00:01", "vf_num": 0}, 404, "pf_mac"),
    ({"pf_mac": "0c:42:a1:00:00:00", "vf_num": 7}, 404, "vf_num"),
    ({"pf_mac": "not-a-mac", "vf_num": 0}, 400, "pf_mac"),
    ({"pf_mac": "0c:42:a1:00:00:00"}, 400, "vf_num"),
])
def test_a_representor_that_does_not_exist_names_the_field(pci_agent, params, status, field):
    response = pci_agent.get("/v1/representors", params=params)

    assert response.status_code == status
    assert response.json()["error"]["field"] == field


def test_an_agent_without_pci_reports_no_pci_fields_and_has_no_pci_endpoints(agent):
    assert "pci_devices" not in agent.service.node_report().body()
    response = agent.get("/v1/pci/devices")
    assert (response.status_code, response.json()["error"]["field"]) == (404, "pci")


def test_a_refused_remote_managed_device_is_logged_once_not_every_pass(start_agent, config_for, node_tree, caplog):
    config = config_for(pci={"root": str(node_tree.root), "devlink_json": str(node_tree.devlink_json),
                             "information": [{"match": {"vendor_id": "15b3"}, "extra": {"remote_managed": "true"}}]})
    drivers = dataclasses.replace(memory_drivers(), inventory=SysfsInventoryDriver(node_tree.root))

    with caplog.at_level(logging.WARNING, logger="dpustack.agent.inventory"):
        agent = start_agent(drivers, config)
        agent.service.converge()

    refused = [r.message for r in caplog.records if "is not offered" in r.message]
    assert sorted(m.split()[1] for m in refused) == ["0000:05:00.0", "0000:05:00.1"]
    assert len(agent.get("/v1/pci/devices").json()) == 8


def test_a_tree_that_vanishes_keeps_the_last_inventory(pci_agent, node_tree):
    (node_tree.root / "bus/pci/devices").rename(node_tree.root / "gone")

    pci_agent.service.converge()

    assert len(pci_agent.get("/v1/pci/devices").json()) == 10


def test_a_malformed_entry_fails_config_loading_naming_the_field(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('insecure = true\n[controller]\nurl = "http://c:1"\ntoken = "t"\n[api]\ncontroller_credential_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"\n\n[pci]\n'
                    '[[pci.information]]\nmatch = {vendor_id = "8086"}\n'
                    '[[pci.information]]\nmatch = {product_id = "000[1-2]"}\n'
                    '[[pci.information]]\nmatch = {vendr_id = "8086"}\nextra = {"e.group" = "gpu"}\n')

    with pytest.raises(InvalidInput) as caught:
        load_config(path)

    assert caught.value.field == "pci.information.2.match.vendr_id"
    assert caught.value.message == f"{path}: pci.information.2.match.vendr_id: unknown device property"


def test_an_unknown_flavor_attr_fails_config_loading(config_for):
    with pytest.raises(InvalidInput, match=r"pci.flavor_attrs: .*'devcie_id' is not a device property"):
        config_for(pci={"flavor_attrs": ["vendor_id", "devcie_id"]})


@pytest.mark.parametrize(("index", "extra_pools"), [
    (1, [{"vendor_id": "8086", "product_id": "154c", "physical_network": "physnet2", "remote_managed": "false"}]),
    (2, [{"vendor_id": "8086", "product_id": "0001", "e.group": "gpu"},
         {"vendor_id": "8086", "product_id": "0002", "e.group": "gpu"}]),
    (3, [{"vendor_id": "177d", "product_id": "000a", "e.QAclass": "1"},
         {"vendor_id": "177d", "product_id": "000b", "e.QAclass": "2"},
         {"vendor_id": "19e5", "product_id": "000b", "e.QAclass": "3"}]),
])
def test_every_lab_node_has_a_bluefield_and_offers_its_other_cards(tmp_path, start_agent, index, extra_pools):
    ca = LabCa(tmp_path / "pki")
    spec = lab_agents.AgentSpec(f"dpu-bm-{index}", 8800 + index, tmp_path / f"dpu-bm-{index}",
                                "https://127.0.0.1:9", "agent-token", digest(API_TOKEN), ca.ca_file, ca.issue("node"),
                                index=index)
    config = load_config(lab_agents.write_config(spec, serial="LAB"))

    status = start_agent(load_drivers(config), config).get("/v1/status").json()

    assert status["dpus"] == [{"hostname": spec.hostname, "card_serial_number": f"MT2146X{index:05d}"}]
    assert status["traits"] == ["COMPUTE_REMOTE_MANAGED_PORTS"]
    assert [(p["attrs"], p["count"]) for p in status["pci_pools"]] == [
        ({"vendor_id": "15b3", "product_id": "101e", "physical_network": "physnet1", "remote_managed": "true"}, 8),
        *[(attrs, 4 if attrs["product_id"] == "154c" else 1) for attrs in extra_pools]]
