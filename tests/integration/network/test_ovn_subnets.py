"""Subnets as OVN sees them: one DHCP_Options row per subnet with DHCP, following every subnet change."""

from __future__ import annotations

from ovn import OvnCentral


def _dhcp_options(ovn: OvnCentral, cidr: str) -> str:
    """The options column of the DHCP_Options row for `cidr`, or "" when there is none."""
    return ovn.nbctl("--bare", "--columns=options", "find", "DHCP_Options", f"cidr={cidr}")


def _dhcp_cidrs(ovn: OvnCentral) -> set[str]:
    return set(ovn.nbctl("--bare", "--columns=cidr", "list", "DHCP_Options").split())


def test_a_subnet_s_dns_servers_are_what_dhcp_hands_out(cloud, ovn):
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, expect=201)
    cloud.call("POST", "/v1/subnets", {"network": "net1", "cidr": "10.20.0.0/24",
                                       "dns_nameservers": ["8.8.8.8", "1.1.1.1"]}, expect=201)
    assert "dns_server={10.10.0.1}" in _dhcp_options(ovn, "10.10.0.0/24")  # none given: the gateway
    options = _dhcp_options(ovn, "10.20.0.0/24")
    assert "dns_server={8.8.8.8,1.1.1.1}" in options and "router=10.20.0.1" in options


def test_a_subnet_without_dhcp_has_no_dhcp_options_and_neither_do_its_ports(cloud, ovn):
    cloud.call("POST", "/v1/networks", {"name": "quiet"}, expect=201)
    subnet = cloud.call("POST", "/v1/subnets", {"network": "quiet", "cidr": "10.30.0.0/24", "enable_dhcp": False},
                        expect=201)
    assert _dhcp_options(ovn, "10.30.0.0/24") == ""
    port = cloud.call("POST", "/v1/ports", {"network": "quiet"}, expect=201)
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.30.0.2"}]
    assert ovn.nbctl("get", "Logical_Switch_Port", port["id"], "dhcpv4_options") == "[]"


def test_deleting_a_subnet_removes_its_dhcp_options_row(cloud, ovn):
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, expect=201)
    second = cloud.call("POST", "/v1/subnets", {"network": "net1", "cidr": "10.20.0.0/24"}, expect=201)
    assert _dhcp_cidrs(ovn) == {"10.10.0.0/24", "10.20.0.0/24"}
    cloud.call("DELETE", f"/v1/subnets/{second['id']}", expect=204)
    assert _dhcp_cidrs(ovn) == {"10.10.0.0/24"}


def test_a_resync_removes_dhcp_options_of_subnets_that_no_longer_exist(cloud, ovn):
    network = cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, expect=201)
    # A row left behind, say by a controller that crashed between the database and OVN.
    ovn.nbctl("dhcp-options-create", "10.99.0.0/24", f"dpustack:network_id={network['id']}",
              "dpustack:subnet_id=gone")
    cloud.call("POST", "/v1/subnets", {"network": "net1", "cidr": "10.20.0.0/24"}, expect=201)
    assert _dhcp_cidrs(ovn) == {"10.10.0.0/24", "10.20.0.0/24"}
