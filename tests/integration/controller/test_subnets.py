"""Subnets as a resource: create, list, show, delete; validation; overlaps; addresses across subnets; isolation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dpustack.db.models import Subnet


def _error(answer) -> tuple[int, str | None]:
    return answer.status_code, answer.json()["error"].get("field")


def test_a_subnet_is_created_listed_shown_and_deleted(cloud):
    network = cloud.call("POST", "/v1/networks", {"name": "n"}, expect=201)
    subnet = cloud.call("POST", "/v1/subnets", {"network": "n", "cidr": "10.20.0.0/24", "name": "apps",
                                                "dns_nameservers": ["8.8.8.8", "1.1.1.1"]}, expect=201)
    assert {k: subnet[k] for k in ("name", "network_id", "cidr", "gateway_ip", "dns_nameservers", "enable_dhcp")} == {
        "name": "apps", "network_id": network["id"], "cidr": "10.20.0.0/24", "gateway_ip": "10.20.0.1",
        "dns_nameservers": ["8.8.8.8", "1.1.1.1"], "enable_dhcp": True}
    quiet = cloud.call("POST", "/v1/subnets", {"network": network["id"], "cidr": "10.21.0.0/24",
                                               "gateway_ip": "10.21.0.254", "enable_dhcp": False}, expect=201)
    assert quiet["gateway_ip"] == "10.21.0.254" and quiet["enable_dhcp"] is False and quiet["name"] == ""

    assert [s["id"] for s in cloud.call("GET", "/v1/subnets")] == [subnet["id"], quiet["id"]]
    assert [s["id"] for s in cloud.call("GET", "/v1/subnets?network=n")] == [subnet["id"], quiet["id"]]
    assert cloud.call("GET", "/v1/subnets/apps") == subnet
    assert cloud.call("GET", f"/v1/subnets/{quiet['id']}") == quiet
    assert cloud.call("GET", "/v1/networks/n")["subnets"] == [subnet, quiet]

    cloud.call("DELETE", "/v1/subnets/apps", expect=204)
    assert cloud.api.get(f"/v1/subnets/{subnet['id']}").status_code == 404
    assert cloud.call("GET", "/v1/networks/n")["subnets"] == [quiet]


def test_the_network_create_shortcut_makes_the_same_kind_of_subnet(cloud):
    network = cloud.call("POST", "/v1/networks", {"name": "n", "subnet": "10.9.0.0/24"}, expect=201)
    (subnet,) = network["subnets"]
    assert cloud.call("GET", "/v1/subnets") == [subnet]
    assert {k: subnet[k] for k in ("name", "network_id", "cidr", "gateway_ip", "dns_nameservers", "enable_dhcp")} == {
        "name": "", "network_id": network["id"], "cidr": "10.9.0.0/24", "gateway_ip": "10.9.0.1",
        "dns_nameservers": [], "enable_dhcp": True}
    answer = cloud.api.post("/v1/networks", json={"name": "six", "subnet": "fd00::/64"})
    assert _error(answer) == (400, "subnet")
    assert [n["name"] for n in cloud.call("GET", "/v1/networks")] == ["n"]


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"cidr": "fd00:1::/64"}, 400, "cidr"),
    ({"cidr": "10.30.0.300/24"}, 400, "cidr"),
    ({"cidr": "10.30.0.5/24"}, 400, "cidr"),  # host bits set
    ({"cidr": "10.30.0.0/31"}, 400, "cidr"),  # no room for a gateway and hosts
    ({"cidr": ""}, 400, "cidr"),
    ({"cidr": "10.30.0.0/24", "gateway_ip": "10.31.0.1"}, 400, "gateway_ip"),
    ({"cidr": "10.30.0.0/24", "gateway_ip": "10.30.0.0"}, 400, "gateway_ip"),
    ({"cidr": "10.30.0.0/24", "gateway_ip": "10.30.0.255"}, 400, "gateway_ip"),
    ({"cidr": "10.30.0.0/24", "gateway_ip": "router"}, 400, "gateway_ip"),
    ({"cidr": "10.30.0.0/24", "dns_nameservers": ["8.8.8.8", "dns.example"]}, 400, "dns_nameservers.1"),
    ({"cidr": "10.30.0.0/24", "dns_nameservers": ["2001:4860:4860::8888"]}, 400, "dns_nameservers.0"),
    ({"cidr": "10.30.0.0/24", "dns_nameservers": ["8.8.8.8", "8.8.8.8"]}, 400, "dns_nameservers.1"),
    ({"cidr": "10.30.0.0/24", "dns_nameservers": [f"10.0.0.{i}" for i in range(1, 7)]}, 400, "dns_nameservers"),
    ({"cidr": "10.30.0.0/24", "name": "bad name!"}, 400, "name"),
    ({"cidr": "10.30.0.0/24", "enable_dhcp": "sometimes"}, 400, "enable_dhcp"),
    ({"cidr": "10.30.0.0/24", "ipv6_mode": "slaac"}, 400, "ipv6_mode"),
    ({}, 400, "cidr"),
    ({"cidr": "10.30.0.0/24", "network": "nope"}, 404, "network"),
])
def test_bad_subnet_input_names_the_field_and_changes_nothing(cloud, body, status, field):
    cloud.call("POST", "/v1/networks", {"name": "n"}, expect=201)
    answer = cloud.api.post("/v1/subnets", json={"network": "n", **body})
    assert _error(answer) == (status, field), answer.text
    assert cloud.call("GET", "/v1/subnets") == []


def test_a_cidr_overlapping_another_subnet_of_the_network_is_a_conflict(cloud):
    cloud.call("POST", "/v1/networks", {"name": "n", "subnet": "10.40.0.0/16"}, expect=201)
    cloud.call("POST", "/v1/networks", {"name": "m"}, expect=201)
    for cidr in ("10.40.0.0/16", "10.40.7.0/24", "10.0.0.0/8"):
        answer = cloud.api.post("/v1/subnets", json={"network": "n", "cidr": cidr})
        assert _error(answer) == (409, "cidr"), cidr
        assert "overlaps subnet 10.40.0.0/16" in answer.json()["error"]["message"]
    cloud.call("POST", "/v1/subnets", {"network": "n", "cidr": "10.41.0.0/24"}, expect=201)
    cloud.call("POST", "/v1/subnets", {"network": "m", "cidr": "10.40.0.0/16"}, expect=201)  # another network


def test_subnet_names_are_unique_per_project(cloud):
    cloud.call("POST", "/v1/networks", {"name": "n"}, expect=201)
    cloud.call("POST", "/v1/networks", {"name": "m"}, expect=201)
    cloud.call("POST", "/v1/subnets", {"network": "n", "cidr": "10.1.0.0/24", "name": "apps"}, expect=201)
    answer = cloud.api.post("/v1/subnets", json={"network": "m", "cidr": "10.2.0.0/24", "name": "apps"})
    assert _error(answer) == (409, "name")


def test_a_subnet_cannot_be_deleted_while_a_port_has_an_address_on_it(cloud):
    network = cloud.call("POST", "/v1/networks", {"name": "n", "subnet": "10.50.0.0/24"}, expect=201)
    subnet_id = network["subnets"][0]["id"]
    port = cloud.call("POST", "/v1/ports", {"network": "n"}, expect=201)
    assert port["fixed_ips"] == [{"subnet_id": subnet_id, "ip_address": "10.50.0.2"}]
    answer = cloud.api.delete(f"/v1/subnets/{subnet_id}")
    assert _error(answer) == (409, "subnet")
    assert port["id"] in answer.json()["error"]["message"]
    cloud.call("DELETE", f"/v1/ports/{port['id']}", expect=204)
    cloud.call("DELETE", f"/v1/subnets/{subnet_id}", expect=204)
    # A network without subnets still makes ports, without addresses.
    assert cloud.call("POST", "/v1/ports", {"network": "n"}, expect=201)["fixed_ips"] == []


def test_ports_take_addresses_from_the_second_subnet_once_the_first_is_full(cloud):
    network = cloud.call("POST", "/v1/networks", {"name": "n", "subnet": "10.9.0.0/29"}, expect=201)
    first = network["subnets"][0]["id"]
    ports = [cloud.call("POST", "/v1/ports", {"network": "n"}, expect=201) for _ in range(5)]
    assert {p["fixed_ips"][0]["subnet_id"] for p in ports} == {first}
    answer = cloud.api.post("/v1/ports", json={"network": "n"})
    assert _error(answer) == (409, "network") and "no free address" in answer.json()["error"]["message"]

    second = cloud.call("POST", "/v1/subnets", {"network": "n", "cidr": "10.9.1.0/24"}, expect=201)["id"]
    port = cloud.call("POST", "/v1/ports", {"network": "n"}, expect=201)
    assert port["fixed_ips"] == [{"subnet_id": second, "ip_address": "10.9.1.2"}]
    # An address freed on the first subnet is the next one given out.
    cloud.call("DELETE", f"/v1/ports/{ports[2]['id']}", expect=204)
    again = cloud.call("POST", "/v1/ports", {"network": "n"}, expect=201)
    assert again["fixed_ips"] == [{"subnet_id": first, "ip_address": ports[2]["fixed_ips"][0]["ip_address"]}]
    assert [p["id"] for p in cloud.call("GET", "/v1/ports?network=n")][-1] == again["id"]


def test_projects_see_only_subnets_of_their_networks(cloud):
    cloud.call("POST", "/v1/projects", {"name": "blue"})
    cloud.call("POST", "/v1/projects", {"name": "red"})
    blue = cloud.call("POST", "/v1/tokens", {"project": "blue"})["token"]
    red = cloud.call("POST", "/v1/tokens", {"project": "red"})["token"]
    cloud.call("POST", "/v1/networks", {"name": "private"}, token=blue, expect=201)
    subnet = cloud.call("POST", "/v1/subnets", {"network": "private", "cidr": "192.168.5.0/24", "name": "secret"},
                        token=blue, expect=201)
    red_headers = {"Authorization": f"Bearer {red}"}

    assert cloud.call("GET", "/v1/subnets", token=red) == []
    for path in (f"/v1/subnets/{subnet['id']}", "/v1/subnets/secret"):
        assert _error(cloud.api.get(path, headers=red_headers)) == (404, "subnet"), path
    assert _error(cloud.api.delete(f"/v1/subnets/{subnet['id']}", headers=red_headers)) == (404, "subnet")
    answer = cloud.api.post("/v1/subnets", json={"network": "private", "cidr": "192.168.6.0/24"}, headers=red_headers)
    assert _error(answer) == (404, "network")
    answer = cloud.api.get("/v1/subnets?network=private", headers=red_headers)
    assert _error(answer) == (404, "network")

    # Red may use the same name and CIDR on a network of its own.
    cloud.call("POST", "/v1/networks", {"name": "private"}, token=red, expect=201)
    mine = cloud.call("POST", "/v1/subnets", {"network": "private", "cidr": "192.168.5.0/24", "name": "secret"},
                      token=red, expect=201)
    assert cloud.call("GET", "/v1/subnets/secret", token=red) == mine
    assert cloud.call("GET", "/v1/subnets", token=blue) == [subnet]
    assert {s["id"] for s in cloud.call("GET", "/v1/subnets")} == {subnet["id"], mine["id"]}  # the admin's view


def test_deleting_a_network_deletes_its_subnets(cloud):
    cloud.call("POST", "/v1/networks", {"name": "n", "subnet": "10.60.0.0/24"}, expect=201)
    cloud.call("POST", "/v1/subnets", {"network": "n", "cidr": "10.61.0.0/24"}, expect=201)
    cloud.call("DELETE", "/v1/networks/n", expect=204)
    assert cloud.call("GET", "/v1/subnets") == []
    with cloud.context.sessions() as session:
        assert session.scalars(select(Subnet)).all() == []
