"""Security groups through the controller API: the port groups and ACLs they become in a real OVN
northbound database, what ovn-northd's logical pipeline then lets through (ovn-trace), and the API's
rules (validation, project isolation) on the database-only backend.
"""

from __future__ import annotations

import subprocess
from typing import Any, Iterator

import pytest

from harness import Cloud
from ovn import OvnCentral

DROP = "pg_dpustack_drop"
DROP_ACLS = {
    "from-lport  1002 (inport == @pg_dpustack_drop && ip4 && udp && udp.src == 68 && udp.dst == 67) allow",
    "from-lport  1001 (inport == @pg_dpustack_drop && ip) drop",
    "to-lport  1001 (outport == @pg_dpustack_drop && ip) drop",
}


@pytest.fixture(autouse=True)
def net1(cloud: Cloud) -> dict[str, Any]:
    """Every test here starts with network net1 (10.10.0.0/24)."""
    return cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})


@pytest.fixture
def plain(tmp_path, database_url) -> Iterator[Cloud]:
    """No OVN (NullBackend), on SQLite and PostgreSQL: the API's own rules."""
    lab = Cloud(tmp_path, database_url, nodes=0)
    try:
        lab.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        yield lab
    finally:
        lab.close()


def pg(group: dict[str, Any]) -> str:
    return "pg_" + group["id"].replace("-", "_")


def acls(ovn: OvnCentral, port_group: str) -> set[str]:
    return {line.strip() for line in ovn.nbctl("acl-list", port_group).splitlines()}


def port_groups_of(ovn: OvnCentral, port: dict[str, Any]) -> set[str]:
    lsp = ovn.nbctl("--bare", "--columns=_uuid", "find", "Logical_Switch_Port", f"name={port['id']}")
    if not lsp:
        return set()
    return set(ovn.nbctl("--bare", "--columns=name", "find", "Port_Group", f"ports{{>=}}{lsp}").split())


def port_group_names(ovn: OvnCentral) -> set[str]:
    return set(ovn.nbctl("--bare", "--columns=name", "list", "Port_Group").split())


def error_of(answer: Any) -> tuple[int, str | None]:
    return answer.status_code, answer.json()["error"].get("field")


# -- what OVN's northbound database holds ------------------------------------------------
def test_a_group_is_a_port_group_with_one_allow_related_acl_per_rule(cloud, ovn):
    web = cloud.call("POST", "/v1/security-groups", {"name": "web", "description": "front ends"}, expect=201)
    name = pg(web)
    assert ovn.nbctl("get", "Port_Group", name, "external_ids:\"dpustack:security_group_id\"").strip('"') == web["id"]
    # A new group allows all egress, as in Neutron.
    assert acls(ovn, name) == {f"from-lport  1002 (inport == @{name} && ip4) allow-related",
                               f"from-lport  1002 (inport == @{name} && ip6) allow-related"}
    rules = [
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 24,
         "remote_ip_prefix": "10.0.0.0/8"},
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 443, "remote_ip_prefix": "0.0.0.0/0"},
        {"direction": "ingress", "protocol": "icmp"},
        {"direction": "ingress", "protocol": "udp", "port_range_min": 53, "port_range_max": 53, "remote_group": "web"},
        {"direction": "egress", "protocol": "udp", "port_range_min": 123, "remote_ip_prefix": "192.0.2.7"},
    ]
    created = [cloud.call("POST", "/v1/security-groups/web/rules", rule, expect=201) for rule in rules]
    assert created[1]["port_range_max"] == 443 and created[4]["remote_ip_prefix"] == "192.0.2.7/32"
    assert acls(ovn, name) == {
        f"from-lport  1002 (inport == @{name} && ip4) allow-related",
        f"from-lport  1002 (inport == @{name} && ip6) allow-related",
        f"to-lport  1002 (outport == @{name} && ip4 && ip4.src == 10.0.0.0/8 && tcp && tcp.dst >= 22 && "
        f"tcp.dst <= 24) allow-related",
        f"to-lport  1002 (outport == @{name} && ip4 && tcp && tcp.dst == 443) allow-related",
        f"to-lport  1002 (outport == @{name} && ip4 && icmp4) allow-related",
        f"to-lport  1002 (outport == @{name} && ip4 && ip4.src == ${name}_ip4 && udp && udp.dst == 53) allow-related",
        f"from-lport  1002 (inport == @{name} && ip4 && ip4.dst == 192.0.2.7/32 && udp && udp.dst == 123) "
        f"allow-related",
    }
    rule_ids = set(ovn.nbctl("--bare", "--columns=external_ids", "list", "ACL").split())
    assert f"dpustack:security_group_rule_id={created[0]['id']}" in rule_ids
    cloud.call("DELETE", f"/v1/security-group-rules/{created[0]['id']}", expect=204)
    assert not any("tcp.dst >= 22" in acl for acl in acls(ovn, name))
    assert len(acls(ovn, name)) == 6
    cloud.call("DELETE", "/v1/security-groups/web", expect=204)
    assert name not in port_group_names(ovn)
    assert ovn.nbctl("--bare", "--columns=match", "list", "ACL") == ""  # the ACLs went with it


def test_a_port_that_names_no_group_is_in_the_default_group_and_the_drop_group(cloud, ovn):
    port = cloud.call("POST", "/v1/ports", {"network": "net1"}, expect=201)
    default = cloud.call("GET", "/v1/security-groups/default")
    assert port["security_groups"] == [default["id"]]
    name = pg(default)
    assert acls(ovn, name) == {
        f"from-lport  1002 (inport == @{name} && ip4) allow-related",
        f"from-lport  1002 (inport == @{name} && ip6) allow-related",
        f"to-lport  1002 (outport == @{name} && ip4 && ip4.src == ${name}_ip4) allow-related",
        f"to-lport  1002 (outport == @{name} && ip6 && ip6.src == ${name}_ip6) allow-related",
    }
    assert acls(ovn, DROP) == DROP_ACLS
    assert port_groups_of(ovn, port) == {name, DROP}
    assert [g["name"] for g in cloud.call("GET", "/v1/security-groups")] == ["default"]  # made once


def test_changing_or_deleting_a_port_moves_it_between_port_groups(cloud, ovn):
    web = cloud.call("POST", "/v1/security-groups", {"name": "web"})
    ssh = cloud.call("POST", "/v1/security-groups", {"name": "ssh"})
    port = cloud.call("POST", "/v1/ports", {"network": "net1", "security_groups": ["web", ssh["id"]]}, expect=201)
    assert port["security_groups"] == [web["id"], ssh["id"]]
    assert port_groups_of(ovn, port) == {pg(web), pg(ssh), DROP}
    port = cloud.call("PUT", f"/v1/ports/{port['id']}", {"security_groups": ["ssh"]})
    assert port["security_groups"] == [ssh["id"]]
    assert port_groups_of(ovn, port) == {pg(ssh), DROP}
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["security_groups"] == [ssh["id"]]
    assert error_of(cloud.api.delete("/v1/security-groups/ssh")) == (409, "security_group")
    assert pg(ssh) in port_group_names(ovn)
    cloud.call("DELETE", f"/v1/ports/{port['id']}", expect=204)
    for group in (pg(ssh), DROP):
        assert ovn.nbctl("get", "Port_Group", group, "ports") == "[]"
    cloud.call("DELETE", "/v1/security-groups/ssh", expect=204)
    assert port_group_names(ovn) == {pg(web), DROP}


def test_deleting_a_group_removes_the_rules_of_other_groups_that_name_it(cloud, ovn):
    web = cloud.call("POST", "/v1/security-groups", {"name": "web"})
    db = cloud.call("POST", "/v1/security-groups", {"name": "db"})
    cloud.call("POST", "/v1/security-groups/db/rules",
               {"direction": "ingress", "protocol": "tcp", "port_range_min": 5432, "remote_group": "web"})
    assert any(f"${pg(web)}_ip4" in acl for acl in acls(ovn, pg(db)))
    cloud.call("DELETE", "/v1/security-groups/web", expect=204)
    assert [r["direction"] for r in cloud.call("GET", "/v1/security-groups/db")["rules"]] == ["egress", "egress"]
    assert not any(pg(web) in acl for acl in acls(ovn, pg(db)))
    assert pg(web) not in port_group_names(ovn)


def test_a_server_nic_is_in_the_groups_it_asks_for(cloud, ovn):
    cloud.call("POST", "/v1/flavors", {"name": "bm.small", "vcpus": 8, "ram": 16384, "disk": 40, "type": "bm"})
    web = cloud.call("POST", "/v1/security-groups", {"name": "web"})
    body = {"name": "web1", "flavor": "bm.small", "networks": [{"network": "net1", "security_groups": ["web"]}]}
    assert cloud.act("POST", "/v1/instances", body)["status"] == "succeeded"
    port_id = cloud.call("GET", "/v1/instances/web1")["ports"][0]
    port = cloud.call("GET", f"/v1/ports/{port_id}")
    assert port["security_groups"] == [web["id"]]
    assert port_groups_of(ovn, port) == {pg(web), DROP}
    ssh = cloud.call("POST", "/v1/security-groups", {"name": "ssh"})
    added = cloud.act("POST", "/v1/instances/web1/nics", {"network": "net1", "security_groups": ["ssh", "web"]})
    assert added["status"] == "succeeded", added
    second = cloud.call("GET", f"/v1/ports/{cloud.call('GET', '/v1/instances/web1')['ports'][1]}")
    assert set(second["security_groups"]) == {ssh["id"], web["id"]}
    assert port_groups_of(ovn, second) == {pg(ssh), pg(web), DROP}
    loose = cloud.call("POST", "/v1/ports", {"network": "net1"})
    bad = {"name": "web2", "flavor": "bm.small",
           "networks": [{"port": loose["id"], "security_groups": ["web"]}]}
    assert error_of(cloud.api.post("/v1/instances", json=bad)) == (400, "networks.0.security_groups")
    unknown = {"name": "web3", "flavor": "bm.small", "networks": [{"network": "net1", "security_groups": ["nope"]}]}
    assert error_of(cloud.api.post("/v1/instances", json=unknown)) == (404, "networks.0.security_groups.0")
    assert cloud.act("DELETE", "/v1/instances/web1")["status"] == "succeeded"
    for group in (pg(web), pg(ssh)):
        assert ovn.nbctl("get", "Port_Group", group, "ports") == "[]"


def test_backend_calls_can_be_repeated_without_changing_anything(cloud, ovn):
    from dpustack.controller.services import networks, security_groups
    from dpustack.db.models import Port, SecurityGroup

    cloud.call("POST", "/v1/security-groups", {"name": "web"})
    cloud.call("POST", "/v1/security-groups/web/rules", {"direction": "ingress", "protocol": "icmp"})
    port = cloud.call("POST", "/v1/ports", {"network": "net1", "security_groups": ["web"]})
    before = (ovn.nbctl("acl-list", f"pg_{port['security_groups'][0].replace('-', '_')}"),
              ovn.nbctl("acl-list", DROP), port_groups_of(ovn, port))
    backend = cloud.context.network
    with cloud.context.sessions() as session:
        group = session.get_one(SecurityGroup, port["security_groups"][0])
        row = session.get_one(Port, port["id"])
        for _ in range(2):
            backend.ensure_security_group(security_groups.spec(group))
            backend.ensure_port(networks.port_spec(row))
    after = (ovn.nbctl("acl-list", f"pg_{port['security_groups'][0].replace('-', '_')}"),
             ovn.nbctl("acl-list", DROP), port_groups_of(ovn, port))
    assert after == before
    backend.delete_security_group("no-such-group")
    backend.delete_port("no-such-port")


def test_when_ovn_fails_the_controller_keeps_nothing(tmp_path, ovn):
    home = tmp_path / "short-timeout"  # a controller of its own, quick to give up on OVN
    home.mkdir()
    cloud = Cloud(home, f"sqlite:///{home / 'c.db'}", nodes=0, ovn_nb=ovn.nb, ovn_timeout=1)
    try:
        cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        cloud.call("POST", "/v1/security-groups", {"name": "web"})
        cloud.call("GET", "/v1/security-groups")  # makes the default group while OVN is there
        ovn.stop()
        answer = cloud.api.post("/v1/security-groups", json={"name": "db"})
        assert answer.status_code == 502 and "OVN" in answer.json()["error"]["message"]
        answer = cloud.api.post("/v1/security-groups/web/rules", json={"direction": "ingress", "protocol": "icmp"})
        assert answer.status_code == 502
        assert sorted(g["name"] for g in cloud.call("GET", "/v1/security-groups")) == ["default", "web"]
        assert len(cloud.call("GET", "/v1/security-groups/web")["rules"]) == 2
        answer = cloud.api.post("/v1/ports", json={"network": "net1"})
        assert answer.status_code == 502 and cloud.call("GET", "/v1/ports") == []
    finally:
        cloud.close()


# -- what ovn-northd's logical pipeline does with it (ovn-trace, no hypervisor needed) --------
class Tracer:
    """Trace packets on net1's logical switch as first packets of new connections."""

    def __init__(self, ovn: OvnCentral, network_id: str):
        self.ovn, self.switch = ovn, f"dps-{network_id}"

    def run(self, flow: str) -> str:
        self.ovn.nbctl("--wait=sb", "sync")  # let ovn-northd catch up
        result = subprocess.run(["ovn-trace", f"--db={self.ovn.sb}", "--minimal", "--ct=new", "--ct=new",
                                 self.switch, flow], check=True, capture_output=True, text=True, timeout=30,
                                env=self.ovn.env)
        return result.stdout

    def delivered(self, source: dict[str, Any], target: dict[str, Any], l4: str) -> bool:
        flow = (f'inport == "{source["id"]}" && eth.src == {source["mac_address"]} && '
                f'eth.dst == {target["mac_address"]} && ip4.src == {ip(source)} && ip4.dst == {ip(target)} && '
                f'ip.ttl == 64 && {l4}')
        return "output(" in self.run(flow)


def ip(port: dict[str, Any]) -> str:
    return port["fixed_ips"][0]["ip_address"]


def test_the_logical_pipeline_passes_what_rules_allow_and_drops_the_rest(cloud, ovn):
    cloud.call("POST", "/v1/security-groups", {"name": "web"})
    cloud.call("POST", "/v1/security-groups/web/rules",
               {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "remote_ip_prefix": "0.0.0.0/0"})
    server = cloud.call("POST", "/v1/ports", {"network": "net1", "security_groups": ["web"]})
    client = cloud.call("POST", "/v1/ports", {"network": "net1"})   # default group
    peer = cloud.call("POST", "/v1/ports", {"network": "net1"})     # default group too
    trace = Tracer(ovn, server["network_id"])
    assert trace.delivered(client, server, "tcp && tcp.dst == 22")
    assert not trace.delivered(client, server, "tcp && tcp.dst == 80")
    assert not trace.delivered(server, client, "tcp && tcp.dst == 22")  # default: ingress from members only
    assert trace.delivered(peer, client, "tcp && tcp.dst == 80")        # ... which peer is
    addresses = subprocess.run(["ovn-sbctl", f"--db={ovn.sb}", "get", "Address_Set",
                                f"{pg(cloud.call('GET', '/v1/security-groups/default'))}_ip4", "addresses"],
                               check=True, capture_output=True, text=True, env=ovn.env).stdout
    assert set(addresses.strip().strip("[]").replace('"', "").split(", ")) == {ip(client), ip(peer)}
    # DHCP and ARP work whatever the rules, even with no egress rule left.
    for rule in cloud.call("GET", "/v1/security-groups/web")["rules"]:
        if rule["direction"] == "egress":
            cloud.call("DELETE", f"/v1/security-group-rules/{rule['id']}", expect=204)
    assert not trace.delivered(server, client, "icmp4")
    dhcp = trace.run(f'inport == "{server["id"]}" && eth.src == {server["mac_address"]} && '
                     f'eth.dst == ff:ff:ff:ff:ff:ff && ip4.src == 0.0.0.0 && ip4.dst == 255.255.255.255 && '
                     f'ip.ttl == 64 && udp && udp.src == 68 && udp.dst == 67')
    assert f"put_dhcp_opts(offerip = {ip(server)}" in dhcp and "output(" in dhcp
    arp = trace.run(f'inport == "{server["id"]}" && eth.src == {server["mac_address"]} && '
                    f'eth.dst == ff:ff:ff:ff:ff:ff && arp.op == 1 && arp.sha == {server["mac_address"]} && '
                    f'arp.spa == {ip(server)} && arp.tpa == {ip(client)}')
    assert "arp.op = 2" in arp and "output(" in arp


# -- the API's rules (database-only backend) ------------------------------------------------
def test_bad_rules_are_a_400_naming_the_field_and_duplicates_a_409(plain):
    plain.call("POST", "/v1/security-groups", {"name": "web"})
    cases = [
        ({"direction": "inward"}, "direction"),
        ({"direction": "ingress", "ethertype": "IPv5"}, "ethertype"),
        ({"direction": "ingress", "protocol": "gre"}, "protocol"),
        ({"direction": "ingress", "protocol": "icmp", "port_range_min": 1}, "port_range_min"),
        ({"direction": "ingress", "port_range_min": 22}, "port_range_min"),
        ({"direction": "ingress", "protocol": "tcp", "port_range_min": 0}, "port_range_min"),
        ({"direction": "ingress", "protocol": "tcp", "port_range_min": 1, "port_range_max": 65536}, "port_range_max"),
        ({"direction": "ingress", "protocol": "tcp", "port_range_min": 30, "port_range_max": 20}, "port_range_max"),
        ({"direction": "ingress", "protocol": "udp", "port_range_max": 20}, "port_range_min"),
        ({"direction": "ingress", "remote_ip_prefix": "10.0.0.300/8"}, "remote_ip_prefix"),
        ({"direction": "ingress", "remote_ip_prefix": "2001:db8::/32"}, "remote_ip_prefix"),
        ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group": "web"}, "remote_group"),
        ({"direction": "ingress", "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        assert error_of(plain.api.post("/v1/security-groups/web/rules", json=body)) == (400, field), body
    assert error_of(plain.api.post("/v1/security-groups/web/rules",
                                   json={"direction": "ingress", "remote_group": "nope"})) == (404, "remote_group")
    assert error_of(plain.api.post("/v1/security-groups/nope/rules",
                                   json={"direction": "ingress"})) == (404, "security_group")
    # A new group's egress rule already allows everything out: the same rule again is a conflict.
    assert error_of(plain.api.post("/v1/security-groups/web/rules",
                                   json={"direction": "egress", "remote_ip_prefix": "0.0.0.0/0"})) == (409, "rule")
    assert len(plain.call("GET", "/v1/security-groups/web")["rules"]) == 2
    assert error_of(plain.api.post("/v1/ports", json={"network": "net1", "security_groups": []})) == \
        (400, "security_groups")
    assert error_of(plain.api.post("/v1/ports", json={"network": "net1", "security_groups": ["web", "nope"]})) == \
        (404, "security_groups.1")
    assert error_of(plain.api.delete("/v1/security-group-rules/nope")) == (404, "security_group_rule")


def test_the_default_group_is_made_once_and_can_be_neither_deleted_nor_remade(plain):
    groups = plain.call("GET", "/v1/security-groups")
    assert [g["name"] for g in groups] == ["default"]
    default = groups[0]
    assert {(r["direction"], r["ethertype"], r["remote_group_id"]) for r in default["rules"]} == {
        ("egress", "IPv4", None), ("egress", "IPv6", None),
        ("ingress", "IPv4", default["id"]), ("ingress", "IPv6", default["id"])}
    assert plain.call("POST", "/v1/ports", {"network": "net1"})["security_groups"] == [default["id"]]
    assert error_of(plain.api.delete("/v1/security-groups/default")) == (409, "security_group")
    assert error_of(plain.api.post("/v1/security-groups", json={"name": "default"})) == (409, "name")
    plain.call("POST", "/v1/security-groups", {"name": "web"})
    assert error_of(plain.api.post("/v1/security-groups", json={"name": "web"})) == (409, "name")
    assert [g["name"] for g in plain.call("GET", "/v1/security-groups")] == ["default", "web"]
    # Its rules can be changed like any other group's.
    ingress = next(r for r in default["rules"] if r["direction"] == "ingress" and r["ethertype"] == "IPv4")
    plain.call("DELETE", f"/v1/security-group-rules/{ingress['id']}", expect=204)
    assert len(plain.call("GET", "/v1/security-groups/default")["rules"]) == 3


def test_groups_are_private_to_their_project(plain):
    for name in ("blue", "red"):
        plain.call("POST", "/v1/projects", {"name": name})
    blue = plain.call("POST", "/v1/tokens", {"project": "blue"})["token"]
    red = plain.call("POST", "/v1/tokens", {"project": "red"})["token"]
    blue_web = plain.call("POST", "/v1/security-groups", {"name": "web"}, token=blue)
    red_web = plain.call("POST", "/v1/security-groups", {"name": "web"}, token=red)  # names are per project
    rule = plain.call("POST", "/v1/security-groups/web/rules", {"direction": "ingress", "protocol": "icmp"},
                      token=blue)
    assert rule["security_group_id"] == blue_web["id"]
    assert [g["id"] for g in plain.call("GET", "/v1/security-groups", token=red)
            if g["name"] == "web"] == [red_web["id"]]
    for method, path in (("GET", f"/v1/security-groups/{blue_web['id']}"),
                         ("DELETE", f"/v1/security-groups/{blue_web['id']}"),
                         ("POST", f"/v1/security-groups/{blue_web['id']}/rules"),
                         ("DELETE", f"/v1/security-group-rules/{rule['id']}")):
        answer = plain.api.request(method, path, json={"direction": "ingress"} if method == "POST" else None,
                                   headers={"Authorization": f"Bearer {red}"})
        assert answer.status_code == 404, (method, path, answer.text)
    plain.call("POST", "/v1/networks", {"name": "rednet", "subnet": "10.20.0.0/24"}, token=red)
    answer = plain.api.post("/v1/ports", json={"network": "rednet", "security_groups": [blue_web["id"]]},
                            headers={"Authorization": f"Bearer {red}"})
    assert error_of(answer) == (404, "security_groups.0")
    answer = plain.api.post("/v1/security-groups/web/rules",
                            json={"direction": "ingress", "remote_group": blue_web["id"]},
                            headers={"Authorization": f"Bearer {red}"})
    assert error_of(answer) == (404, "remote_group")
    # Each project's port gets its own project's default group.
    port = plain.call("POST", "/v1/ports", {"network": "rednet"}, token=red)
    red_default = plain.call("GET", "/v1/security-groups/default", token=red)
    assert port["security_groups"] == [red_default["id"]] and red_default["project_id"] == port["project_id"]
    # An admin sees every project's groups but attaches only groups of the port's own project.
    assert {blue_web["id"], red_web["id"]} <= {g["id"] for g in plain.call("GET", "/v1/security-groups")}
    answer = plain.api.put(f"/v1/ports/{port['id']}", json={"security_groups": [blue_web["id"]]})
    assert error_of(answer) == (404, "security_groups.0")
    assert plain.call("PUT", f"/v1/ports/{port['id']}", {"security_groups": ["web"]})["security_groups"] == \
        [red_web["id"]]
