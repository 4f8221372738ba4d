"""Port QoS through the controller API on SQLite and PostgreSQL (database-only backend): what a port
shows, what `PUT`/`DELETE /v1/ports/{id}/qos` accept and refuse, and whose ports a project may limit.
What OVN makes of it is tests/integration/network/test_port_qos.py; what it does to traffic,
tests/integration/lab/test_port_qos_dataplane.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from dpustack.controller.services.networks import MAX_QOS_BPS, MAX_QOS_PPS

NO_NODES = pytest.mark.parametrize("cloud", [0], indirect=True)

UNLIMITED = {"bps": None, "pps": None}


def _port(cloud, token: str | None = None) -> dict[str, Any]:
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, token=token)
    return cloud.call("POST", "/v1/ports", {"network": "net1"}, token=token)


def _error(answer) -> tuple[int, str | None, str]:
    error = answer.json()["error"]
    return answer.status_code, error.get("field"), error["message"]


@NO_NODES
def test_a_port_shows_its_limits_which_put_replaces_and_delete_clears(cloud):
    port = _port(cloud)
    assert port["qos"] == UNLIMITED
    path = f"/v1/ports/{port['id']}/qos"
    limited = cloud.call("PUT", path, {"bps": 2_000_000})
    assert limited["id"] == port["id"] and limited["qos"] == {"bps": 2_000_000, "pps": None}
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 2_000_000, "pps": None}
    assert [p["qos"] for p in cloud.call("GET", "/v1/ports")] == [{"bps": 2_000_000, "pps": None}]
    assert cloud.call("PUT", path, {"bps": 5, "pps": None})["qos"] == {"bps": 5, "pps": None}
    assert cloud.call("PUT", path, {})["qos"] == UNLIMITED  # absent: no limit
    cloud.call("PUT", path, {"bps": MAX_QOS_BPS})
    cleared = cloud.call("DELETE", path)
    assert cleared["id"] == port["id"] and cleared["qos"] == UNLIMITED
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == UNLIMITED
    assert cloud.call("DELETE", path)["qos"] == UNLIMITED  # clearing twice is fine


@NO_NODES
@pytest.mark.parametrize("body, field", [
    ({"bps": 0}, "bps"), ({"bps": -1}, "bps"), ({"bps": "1000"}, "bps"), ({"bps": 1.5}, "bps"),
    ({"bps": True}, "bps"), ({"bps": 2**63}, "bps"), ({"bps": MAX_QOS_BPS + 1}, "bps"),
    ({"pps": 0}, "pps"), ({"pps": "many"}, "pps"), ({"pps": MAX_QOS_PPS + 1}, "pps"), ({"rate": 1000}, "rate"),
    ([], "body"), (None, "body"), ("fast", "body"),
])
def test_bad_limits_are_a_400_naming_the_field_and_change_nothing(cloud, body, field):
    port = _port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    cloud.call("PUT", path, {"bps": 3_000_000})
    answer = cloud.api.put(path, json=body)
    assert _error(answer)[:2] == (400, field), answer.text
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": None}


@NO_NODES
def test_a_packet_rate_limit_of_an_unplugged_port_is_stored_for_its_next_plug(cloud):
    port = _port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    assert cloud.call("PUT", path, {"bps": 1_000_000, "pps": 1000})["qos"] == {"bps": 1_000_000, "pps": 1000}
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 1_000_000, "pps": 1000}
    assert cloud.call("PUT", path, {"pps": MAX_QOS_PPS})["qos"] == {"bps": None, "pps": MAX_QOS_PPS}
    assert cloud.call("DELETE", path)["qos"] == UNLIMITED


@NO_NODES
def test_a_project_limits_only_its_own_ports(cloud):
    for name in ("red", "blue"):
        cloud.call("POST", "/v1/projects", {"name": name})
    red, blue = (cloud.call("POST", "/v1/tokens", {"project": name, "role": "member"})["token"]
                 for name in ("red", "blue"))
    port = _port(cloud, token=blue)
    path = f"/v1/ports/{port['id']}/qos"
    assert cloud.call("PUT", path, {"bps": 1_000_000}, token=blue)["qos"]["bps"] == 1_000_000
    for method, body in (("PUT", {"bps": 1}), ("DELETE", None)):
        answer = cloud.api.request(method, path, json=body, headers={"Authorization": f"Bearer {red}"})
        assert _error(answer)[:2] == (404, "port"), answer.text
        # a refused body changes nothing either: another project's port is not found, whatever is asked
        answer = cloud.api.put(path, json={"pps": 5}, headers={"Authorization": f"Bearer {red}"})
        assert answer.status_code == 404
    assert cloud.call("GET", f"/v1/ports/{port['id']}", token=blue)["qos"]["bps"] == 1_000_000
    assert cloud.call("DELETE", path)["qos"] == UNLIMITED  # the admin may
    assert _error(cloud.api.put("/v1/ports/no-such-port/qos", json={"bps": 1}))[:2] == (404, "port")


# -- packet rates reach the agent of the node the port is plugged on -------------------------
def _plugged_port(cloud) -> tuple[dict[str, Any], Any]:
    """A server's port, bound to its node; and that node's switch driver (memory)."""
    cloud.setup_basics()
    assert cloud.build("web1")["status"] == "succeeded"
    [port] = cloud.call("GET", "/v1/ports")
    return port, cloud.drivers(port["binding_host_id"]).switch


def _limit_on_node(switch, port: dict[str, Any]) -> int | None:
    return switch.packet_rate("br-int", port["binding_profile"]["representor"])


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_packet_rate_limit_reaches_the_agent_of_the_node_the_port_is_plugged_on(cloud):
    port, switch = _plugged_port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    assert _limit_on_node(switch, port) is None
    assert cloud.call("PUT", path, {"bps": 2_000_000, "pps": 1000})["qos"] == {"bps": 2_000_000, "pps": 1000}
    assert _limit_on_node(switch, port) == 1000
    assert cloud.call("PUT", path, {"pps": 2500})["qos"] == {"bps": None, "pps": 2500}
    assert _limit_on_node(switch, port) == 2500
    calls = len([c for c in switch.faults.calls if c == "set_packet_rate"])
    cloud.call("PUT", path, {"bps": 5_000_000, "pps": 2500})  # the packet rate did not change: not re-sent
    assert len([c for c in switch.faults.calls if c == "set_packet_rate"]) == calls
    assert cloud.call("DELETE", path)["qos"] == UNLIMITED
    assert _limit_on_node(switch, port) is None


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_packet_rate_the_agent_refuses_is_a_502_and_the_port_keeps_its_limits(cloud):
    port, switch = _plugged_port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    cloud.call("PUT", path, {"bps": 3_000_000, "pps": 1000})
    switch.faults.arm("set_packet_rate", message="ovs-ofctl: br-int.mgmt: connection refused")
    status, _, message = _error(cloud.api.put(path, json={"bps": 1_000_000, "pps": 500}))
    assert status == 502
    assert "could not apply the packet-rate limit" in message and "connection refused" in message, message
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": 1000}
    assert _limit_on_node(switch, port) == 1000  # the agent kept its old limit too

    cloud.router.down.add(port["binding_host_id"])  # an agent that cannot be reached: the same
    status, _, message = _error(cloud.api.delete(path))
    assert status == 502 and "agent unreachable" in message, message
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": 1000}
    cloud.router.down.clear()
    assert cloud.call("DELETE", path)["qos"] == UNLIMITED and _limit_on_node(switch, port) is None


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_port_limited_before_it_is_plugged_is_plugged_with_its_packet_rate(cloud):
    cloud.setup_basics()
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    cloud.call("PUT", f"/v1/ports/{port['id']}/qos", {"pps": 4000})
    assert cloud.build("web1", networks=[{"port": port["id"]}])["status"] == "succeeded"
    port = cloud.call("GET", f"/v1/ports/{port['id']}")
    assert _limit_on_node(cloud.drivers(port["binding_host_id"]).switch, port) == 4000

    other = cloud.call("POST", "/v1/ports", {"network": "net1"})
    cloud.call("PUT", f"/v1/ports/{other['id']}/qos", {"pps": 300})
    assert cloud.act("POST", "/v1/instances/web1/nics", {"port": other["id"]})["status"] == "succeeded"
    other = cloud.call("GET", f"/v1/ports/{other['id']}")
    assert _limit_on_node(cloud.drivers(other["binding_host_id"]).switch, other) == 300
