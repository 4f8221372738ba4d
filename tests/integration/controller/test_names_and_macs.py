"""One name rule for every named resource, unicast MACs only, and no NUL character in any input."""

from __future__ import annotations

NOT_UNICAST = ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01", "03:00:00:00:00:00",
               "00:00:00:00:00:00", "FF-FF-FF-FF-FF-FF"]
BAD_NAMES = ["a\x00b", "tab\there", "new\nline", "bad name!", "", "-leading-dash", "x" * 256]


def error_of(answer) -> tuple[int, str | None]:
    return answer.status_code, answer.json()["error"].get("field")


def test_a_port_refuses_a_mac_that_is_not_unicast_and_is_not_made(cloud):
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
    for mac in NOT_UNICAST:
        answer = cloud.api.post("/v1/ports", json={"network": "net1", "mac": mac})
        assert error_of(answer) == (400, "mac"), (mac, answer.text)
        assert "unicast" in answer.json()["error"]["message"], answer.text
    assert cloud.call("GET", "/v1/ports") == []
    port = cloud.call("POST", "/v1/ports", {"network": "net1", "mac": "FA-16-3E-00-00-01"}, expect=201)
    assert port["mac_address"] == "fa:16:3e:00:00:01"


def _creates(name: str) -> list[tuple[str, dict, str]]:
    """A create call of every named resource, with `name` as its name, and the field to blame."""
    ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    return [
        ("/v1/projects", {"name": name}, "name"),
        ("/v1/tokens", {"project": "admin", "name": name}, "name"),
        ("/v1/flavors", {"name": name, "vcpus": 1, "ram": 1, "disk": 1, "type": "bm"}, "name"),
        ("/v1/images", {"name": name}, "name"),
        ("/v1/networks", {"name": name}, "name"),
        ("/v1/subnets", {"network": "net1", "cidr": "10.20.0.0/24", "name": name}, "name"),
        ("/v1/ports", {"network": "net1", "name": name}, "name"),
        ("/v1/security-groups", {"name": name}, "name"),
        ("/v1/volumes", {"name": name, "size": 1}, "name"),
        ("/v1/instances", {"name": name, "flavor": "bm.small"}, "name"),
        ("/v1/keypairs", {"name": name, "public_key": ed25519}, "name"),
        ("/v1/pci-flavors", {"name": name}, "name"),
    ]


def _counts(cloud) -> dict[str, int]:
    paths = ["/v1/projects", "/v1/tokens", "/v1/flavors", "/v1/images", "/v1/networks", "/v1/subnets",
             "/v1/ports", "/v1/security-groups", "/v1/volumes", "/v1/instances", "/v1/keypairs", "/v1/pci-flavors"]
    return {path: len(cloud.call("GET", path)) for path in paths}


def test_every_named_resource_follows_one_name_rule(cloud):
    cloud.setup_basics()
    before = _counts(cloud)
    for name in BAD_NAMES:
        # Optional names (tokens, subnets, ports) may be left empty; the rule applies to what is given.
        optional = ("/v1/tokens", "/v1/subnets", "/v1/ports")
        for path, body, field in _creates(name):
            if name == "" and path in optional:
                continue
            answer = cloud.api.post(path, json=body)
            assert error_of(answer) == (400, field), (path, name, answer.text)
    answer = cloud.api.post(f"/v2/{cloud.call('GET', '/v1/whoami')['project_id']}/os-pci-flavors",
                            json={"pci-flavor": {"name": "a\x00b"}})
    assert error_of(answer) == (400, "pci-flavor.name"), answer.text
    assert _counts(cloud) == before
    # What the rule admits, every resource admits (the names the CLI and the lab use).
    for path, body, _ in _creates("Web-1.prod_a"):
        assert cloud.api.post(path, json=body).status_code in (201, 202), (path, body)


def test_a_nul_character_in_any_input_is_a_400_naming_it(cloud):
    # PostgreSQL cannot hold a NUL character: without this rule it failed with a 500.
    cloud.setup_basics()
    cases = [
        ("GET", "/v1/flavors/bm%00small", None, "ref"),
        ("DELETE", "/v1/networks/net%001", None, "ref"),
        ("GET", "/v1/ports?network=net%001", None, "network"),
        ("POST", "/v1/ports", {"network": "net\x001"}, "network"),
        ("POST", "/v1/security-groups", {"name": "web", "description": "a\x00b"}, "description"),
        ("POST", "/v1/instances", {"name": "a", "flavor": "bm.small", "networks": [{"network": "n\x00"}]},
         "networks.0.network"),
    ]
    for method, path, body, field in cases:
        answer = cloud.api.request(method, path, json=body)
        assert error_of(answer) == (400, field), (method, path, answer.text)
        assert "NUL" in answer.json()["error"]["message"]
    assert [g["name"] for g in cloud.call("GET", "/v1/security-groups")] == ["default"]
    assert cloud.call("GET", "/v1/networks/net1")["name"] == "net1"

