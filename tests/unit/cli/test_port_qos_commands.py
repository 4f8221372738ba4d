"""`dpustack port set --qos-bps/--qos-pps/--no-qos`: what is sent, what is shown, and no half-done change."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from cli_fake_api import FakeApi, Invoke


def _respond(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


@pytest.fixture
def port(dpustack: Invoke, fake: FakeApi) -> dict[str, Any]:
    """A port, with the fake answering PUT/DELETE /v1/ports/{id}/qos as the controller does
    (a pps of 13 plays a node whose switch refuses the limit)."""

    def set_qos(request: httpx.Request, ref: str) -> httpx.Response:
        found = fake.find("ports", ref)
        body = json.loads(request.content) if request.method == "PUT" else {}
        if body.get("pps") == 13:
            return _respond(502, {"error": {"code": "driver_error", "field": None,
                                            "message": "node dpu-bm-1 could not apply the packet-rate limit"}})
        found["qos"] = {"bps": body.get("bps"), "pps": body.get("pps")}
        return _respond(200, found)

    fake.routes += [(method, re.compile(r"/v1/ports/([^/]+)/qos$"), set_qos)
                    for method in ("PUT", "DELETE")]
    dpustack("network", "create", "net1", "--subnet", "10.10.0.0/24")
    dpustack("security-group", "create", "web")
    created = json.loads(dpustack("port", "create", "--network", "net1", "-f", "json").stdout)
    fake.find("ports", created["id"])["qos"] = {"bps": None, "pps": None}
    return created


def _calls(fake: FakeApi) -> list[tuple[str, str, Any]]:
    return [(r.method, r.url.path, json.loads(r.content) if r.content else None) for r in fake.requests]


def test_qos_bps_is_put_keeping_the_other_limit_and_shown(dpustack: Invoke, fake: FakeApi, port) -> None:
    fake.requests.clear()
    result = dpustack("port", "set", port["id"], "--qos-bps", "2000000")
    assert result.exit_code == 0, result.output
    assert _calls(fake) == [("GET", f"/v1/ports/{port['id']}", None),
                            ("PUT", f"/v1/ports/{port['id']}/qos", {"bps": 2000000, "pps": None})]
    assert any("qos" in line and "bps=2000000" in line for line in result.stdout.splitlines())
    cleared = dpustack("port", "set", port["id"], "--no-qos", "-f", "json")
    assert cleared.exit_code == 0, cleared.output
    assert _calls(fake)[-1] == ("DELETE", f"/v1/ports/{port['id']}/qos", None)
    assert json.loads(cleared.stdout)["qos"] == {"bps": None, "pps": None}
    shown = dpustack("port", "show", port["id"])
    assert any("qos" in line and "-" in line for line in shown.stdout.splitlines())


def test_a_packet_rate_is_put_and_a_refused_one_is_a_readable_error(dpustack: Invoke, fake: FakeApi,
                                                                     port) -> None:
    result = dpustack("port", "set", port["id"], "--qos-pps", "1000", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["qos"] == {"bps": None, "pps": 1000}
    refused = dpustack("port", "set", port["id"], "--qos-pps", "13")
    assert refused.exit_code == 1 and "could not apply the packet-rate limit" in refused.stderr
    assert dpustack("port", "set", port["id"], "--qos-bps", "0").exit_code == 2  # typer: min=1


def test_limits_are_put_back_when_the_security_groups_are_refused(dpustack: Invoke, fake: FakeApi, port) -> None:
    dpustack("port", "set", port["id"], "--qos-bps", "1000000")
    fake.requests.clear()
    result = dpustack("port", "set", port["id"], "--qos-bps", "5000000", "--security-group", "nope")
    assert result.exit_code == 1
    assert [c for c in _calls(fake) if c[0] == "PUT"] == [
        ("PUT", f"/v1/ports/{port['id']}/qos", {"bps": 5000000, "pps": None}),
        ("PUT", f"/v1/ports/{port['id']}", {"security_groups": ["nope"]}),
        ("PUT", f"/v1/ports/{port['id']}/qos", {"bps": 1000000, "pps": None})]
    assert fake.find("ports", port["id"])["qos"] == {"bps": 1000000, "pps": None}
    both = dpustack("port", "set", port["id"], "--qos-bps", "3000000", "--security-group", "web", "-f", "json")
    assert both.exit_code == 0, both.output
    assert json.loads(both.stdout)["qos"]["bps"] == 3000000


def test_no_qos_and_a_limit_together_or_nothing_at_all_is_a_usage_error(dpustack: Invoke, port) -> None:
    both = dpustack("port", "set", port["id"], "--no-qos", "--qos-bps", "5")
    assert both.exit_code == 1 and "not both" in both.stderr
    nothing = dpustack("port", "set", port["id"])
    assert nothing.exit_code == 1 and "--qos-bps" in nothing.stderr
