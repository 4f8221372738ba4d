"""`dpustack security-group …` and ports' `--security-group`: what is sent, and what is shown."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke


def _sent(fake: FakeApi) -> dict:
    return json.loads(fake.requests[-1].content)


def test_create_then_show_lists_the_group_and_its_rules(dpustack: Invoke, fake: FakeApi) -> None:
    created = dpustack("security-group", "create", "web", "--description", "front ends")
    assert created.exit_code == 0, created.output
    assert _sent(fake) == {"name": "web", "description": "front ends"}
    shown = dpustack("security-group", "show", "web")
    assert shown.exit_code == 0, shown.output
    assert "front ends" in shown.stdout and "Rules" in shown.stdout and "egress" in shown.stdout
    listing = dpustack("security-group", "list", "-f", "json")
    assert [g["name"] for g in json.loads(listing.stdout)] == ["web"]


def test_rule_create_sends_a_port_range_and_a_remote_prefix(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("security-group", "create", "web")
    result = dpustack("security-group", "rule", "create", "web", "--direction", "ingress", "--protocol", "tcp",
                      "--port", "22:24", "--remote-ip", "0.0.0.0/0")
    assert result.exit_code == 0, result.output
    assert _sent(fake) == {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                           "port_range_max": 24, "remote_ip_prefix": "0.0.0.0/0"}
    assert "22:24" in result.stdout and "0.0.0.0/0" in result.stdout
    single = dpustack("security-group", "rule", "create", "web", "--direction", "ingress", "--protocol", "udp",
                      "--port", "53", "--remote-group", "web", "-f", "json")
    assert _sent(fake) == {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp", "port_range_min": 53,
                           "port_range_max": 53, "remote_group": "web"}
    assert json.loads(single.stdout)["remote_group_id"] == fake.find("security_groups", "web")["id"]


def test_rule_create_refuses_a_bad_port_or_direction(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("security-group", "create", "web")
    bad_port = dpustack("security-group", "rule", "create", "web", "--direction", "ingress", "--port", "ssh")
    assert bad_port.exit_code == 1 and "--port expects PORT or MIN:MAX" in bad_port.stderr
    icmp_port = dpustack("security-group", "rule", "create", "web", "--direction", "ingress", "--protocol", "icmp",
                         "--port", "22")
    assert icmp_port.exit_code == 1 and "(field: port_range_min)" in icmp_port.stderr
    assert dpustack("security-group", "rule", "create", "web", "--direction", "inward").exit_code == 2


def test_rule_delete_and_group_delete(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("security-group", "create", "web")
    rule_id = fake.find("security_groups", "web")["rules"][0]["id"]
    deleted = dpustack("security-group", "rule", "delete", rule_id)
    assert deleted.exit_code == 0 and fake.requests[-1].url.path == f"/v1/security-group-rules/{rule_id}"
    assert fake.find("security_groups", "web")["rules"] == []
    assert dpustack("security-group", "delete", "web").exit_code == 0
    refused = dpustack("security-group", "delete", "default")
    assert refused.exit_code == 1 and "default security group cannot be deleted" in refused.stderr


def test_port_create_and_set_send_security_groups(dpustack: Invoke, fake: FakeApi) -> None:
    dpustack("network", "create", "net1", "--subnet", "10.10.0.0/24")
    dpustack("security-group", "create", "web")
    dpustack("security-group", "create", "ssh")
    created = dpustack("port", "create", "--network", "net1", "--security-group", "web", "--security-group", "ssh",
                       "-f", "json")
    assert created.exit_code == 0, created.output
    assert _sent(fake) == {"network": "net1", "vnic_type": "normal", "security_groups": ["web", "ssh"]}
    port = json.loads(created.stdout)
    changed = dpustack("port", "set", port["id"], "--security-group", "default")
    assert changed.exit_code == 0, changed.output
    request = fake.requests[-1]
    assert (request.method, request.url.path, _sent(fake)) == ("PUT", f"/v1/ports/{port['id']}",
                                                               {"security_groups": ["default"]})
    default_id = fake.find("security_groups", "default")["id"]
    assert any("security_groups" in line and default_id in line for line in changed.stdout.splitlines())


def test_port_set_needs_a_group(dpustack: Invoke) -> None:
    result = dpustack("port", "set", "p1")
    assert result.exit_code == 1 and "give --security-group" in result.stderr
