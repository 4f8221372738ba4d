"""Networks and ports as OVN sees them: the controller writes the real northbound database."""

from __future__ import annotations

import json

from dpustack import metadata_port
from ovn import OvnCentral


def _lsp(ovn: OvnCentral, port_id: str, column: str) -> str:
    return ovn.nbctl("get", "Logical_Switch_Port", port_id, column)


def test_a_network_is_a_logical_switch_with_native_dhcp(cloud, ovn):
    network = cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, expect=201)
    assert ovn.nbctl("--bare", "--columns=name", "find", "Logical_Switch",
                     f"external_ids:\"dpustack:network_id\"={network['id']}") == f"dps-{network['id']}"
    options = ovn.nbctl("--bare", "--columns=options", "find", "DHCP_Options", "cidr=10.10.0.0/24")
    assert "router=10.10.0.1" in options and "mtu=1442" in options
    assert "169.254.169.254/32,0.0.0.0" in options  # an on-link route to the metadata service
    localport = f"dpustack-metadata-{network['id']}"
    assert _lsp(ovn, localport, "type") == "localport"
    assert json.loads(_lsp(ovn, localport, "addresses")) == [f"{metadata_port.port_mac(network['id'])} 169.254.169.254"]


def test_a_port_is_a_logical_switch_port_with_its_address_and_port_security(cloud, ovn):
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, expect=201)
    port = cloud.call("POST", "/v1/ports", {"network": "net1"}, expect=201)
    expected = f"{port['mac_address']} {port['fixed_ips'][0]['ip_address']}"
    assert json.loads(_lsp(ovn, port["id"], "addresses")) == [expected]
    assert json.loads(_lsp(ovn, port["id"], "port_security")) == [expected]
    assert _lsp(ovn, port["id"], "dhcpv4_options") != "[]"
    cloud.call("DELETE", f"/v1/ports/{port['id']}", expect=204)
    assert port["id"] not in ovn.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split()


def test_a_built_server_s_ports_exist_in_ovn_and_go_away_with_it(cloud, ovn):
    cloud.setup_basics()
    assert cloud.build("web1")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/web1")
    assert _lsp(ovn, server["ports"][0], "name").strip('"') == server["ports"][0]
    assert cloud.act("DELETE", "/v1/instances/web1")["status"] == "succeeded"
    network = cloud.call("GET", "/v1/networks/net1")
    left = ovn.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split()
    assert left == [metadata_port.port_name(network["id"])]  # only the network's own metadata localport
    cloud.call("DELETE", "/v1/networks/net1", expect=204)
    assert ovn.nbctl("--bare", "--columns=name", "list", "Logical_Switch") == ""
    assert ovn.nbctl("--bare", "--columns=cidr", "list", "DHCP_Options") == ""


def test_when_ovn_refuses_a_change_the_controller_keeps_nothing(cloud, ovn):
    ovn.stop()
    answer = cloud.api.post("/v1/networks", json={"name": "net2", "subnet": "10.20.0.0/24"})
    assert answer.status_code == 502 and "OVN" in answer.json()["error"]["message"]
    assert cloud.call("GET", "/v1/networks") == []
