"""Only the controller's bearer token gets in; bad input is a 400 naming the field."""

from __future__ import annotations

import pytest

from .conftest import Agent, build_request


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/status"), ("GET", "/v1/instances"), ("POST", "/v1/instances"), ("DELETE", "/v1/instances/x"),
    ("GET", "/v1/functions"), ("POST", "/v1/switch/ports"), ("POST", "/v1/bmc/power_on"),
    ("GET", "/v1/bmc/hw_info"),
])
def test_calls_without_a_token_are_rejected(agent: Agent, method, path):
    response = agent.call(method, path, token=None)

    assert response.status_code == 401
    assert response.json()["error"] == {"code": "unauthorized", "message": "missing bearer token"}


def test_a_wrong_token_is_rejected_and_changes_nothing(agent: Agent):
    response = agent.call("POST", "/v1/bmc/power_on", token="guess")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid token"
    assert agent.drivers.bmc.power_state() == "off"


def test_another_auth_scheme_is_rejected(agent: Agent):
    response = agent.client.get("/v1/status", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert response.status_code == 401


def test_healthz_needs_no_token(agent: Agent):
    assert agent.call("GET", "/healthz", token=None).json() == {"status": "ok"}


@pytest.mark.parametrize("overrides, field", [
    ({"networks": [{"port_id": "p1", "mac": "not-a-mac"}]}, "networks.0.mac"),
    ({"networks": [{"port_id": "p1", "mac": "aa:bb:cc-dd:ee:ff"}]}, "networks.0.mac"),
    ({"flavor": {"name": "x", "vcpus": 0, "ram": 1}}, "flavor.vcpus"),
    ({"flavor": None}, "flavor"),
    ({"uuid": "has spaces"}, "uuid"),
    ({"volumes": [{"volume_id": "v1"}]}, "volumes.0.uri"),
    ({"colour": "blue"}, "colour"),
])
def test_an_invalid_build_is_400_naming_the_field(agent: Agent, overrides, field):
    response = agent.post("/v1/instances", build_request(**overrides))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
    assert response.json()["error"]["field"] == field
    assert agent.hardware()["functions"] == []


def test_a_port_listed_twice_is_400_naming_the_second(agent: Agent):
    nic = {"port_id": "p1", "mac": "aa:bb:cc:dd:ee:01"}
    response = agent.build(networks=[nic, {**nic, "mac": "aa:bb:cc:dd:ee:02"}])

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "networks.1.port_id"


def test_two_nics_with_one_mac_are_refused(agent: Agent):
    response = agent.build(networks=[{"port_id": "p1", "mac": "aa:bb:cc:dd:ee:01"},
                                     {"port_id": "p2", "mac": "AA:BB:CC:DD:EE:01"}])

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "networks.1.mac"


def test_an_unknown_reboot_type_is_400(built: Agent):
    response = built.post("/v1/instances/inst-1/reboot", {"type": "gentle"})

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "type"


def test_a_bad_bridge_name_is_400(agent: Agent):
    response = agent.post("/v1/switch/ports", {"bridge": "a-bridge-name-too-long", "port_name": "p",
                                               "external_id": "x"})

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "bridge"


NOT_UNICAST = ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33-33-00-00-00-01", "00:00:00:00:00:00"]


@pytest.mark.parametrize("mac", NOT_UNICAST)
def test_a_mac_that_is_not_unicast_is_refused_wherever_the_controller_sends_one(built: Agent, mac):
    before = built.snapshot()
    answers = [
        ("networks.0.mac", built.build(uuid="inst-2", networks=[{"port_id": "p9", "mac": mac}])),
        ("mac", built.post("/v1/instances/inst-1/nics", {"port_id": "port-c", "mac": mac})),
        ("mac", built.post("/v1/functions", {"id": "fn-9", "mac": mac})),
    ]
    for field, response in answers:
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"]["field"] == field
        assert "unicast" in response.json()["error"]["message"]
    assert built.snapshot() == before


def test_a_method_a_path_does_not_take_is_a_405_listing_every_method_it_takes(agent: Agent):
    response = agent.call("PATCH", "/v1/instances/inst-1", token=None)

    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_openapi_document_lists_each_operations_error_answers(agent: Agent):
    document = agent.get("/openapi.json").json()
    operations = {(method, path): operation["responses"] for path, item in document["paths"].items()
                  for method, operation in item.items()}

    assert all("422" not in responses for responses in operations.values())
    assert sorted(operations[("post", "/v1/instances")]) == ["200", "400", "401", "409", "502"]
    assert sorted(operations[("get", "/v1/pci/devices")]) == ["200", "401", "404"]  # without [pci]
    assert sorted(operations[("post", "/v1/switch/ports")]) == ["201", "400", "401", "404", "409", "502"]  # pf_id
    assert sorted(operations[("get", "/healthz")]) == ["200"]
    assert operations[("get", "/v1/status")]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
