"""Port QoS through the controller API on SQLite and PostgreSQL (database-only backend): what a port
shows, what `PUT`/`DELETE /v1/ports/{id}/qos` accept and refuse, and whose ports a project may limit.
What OVN makes of it is tests/integration/network/test_port_qos.py; what it does to traffic,
tests/integration/lab/test_port_qos_dataplane.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from dpustack.controller.services.networks import MAX_QOS_BPS

pytestmark = pytest.mark.parametrize("cloud", [0], indirect=True)  # no nodes needed

UNLIMITED = {"bps": None, "pps": None}


def _port(cloud, token: str | None = None) -> dict[str, Any]:
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, token=token)
    return cloud.call("POST", "/v1/ports", {"network": "net1"}, token=token)


def _error(answer) -> tuple[int, str | None, str]:
    error = answer.json()["error"]
    return answer.status_code, error.get("field"), error["message"]


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


@pytest.mark.parametrize("body, field", [
    ({"bps": 0}, "bps"), ({"bps": -1}, "bps"), ({"bps": "1000"}, "bps"), ({"bps": 1.5}, "bps"),
    ({"bps": True}, "bps"), ({"bps": 2**63}, "bps"), ({"bps": MAX_QOS_BPS + 1}, "bps"),
    ({"pps": 0}, "pps"), ({"pps": "many"}, "pps"), ({"rate": 1000}, "rate"),
    ([], "body"), (None, "body"), ("fast", "body"),
])
def test_bad_limits_are_a_400_naming_the_field_and_change_nothing(cloud, body, field):
    port = _port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    cloud.call("PUT", path, {"bps": 3_000_000})
    answer = cloud.api.put(path, json=body)
    assert _error(answer)[:2] == (400, field), answer.text
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": None}


def test_a_packet_rate_limit_is_refused_with_the_reason(cloud):
    port = _port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    cloud.call("PUT", path, {"bps": 3_000_000})
    status, field, message = _error(cloud.api.put(path, json={"bps": 1_000_000, "pps": 1000}))
    assert (status, field) == (400, "pps")
    assert "packet-rate limits are not supported" in message and "bits per second only" in message
    # All or nothing: the bit rate given with it was not applied either.
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": None}
    assert cloud.call("PUT", path, {"bps": 1_000_000, "pps": None})["qos"] == {"bps": 1_000_000, "pps": None}


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
