"""`dpustack port set --qos-bps/--qos-pps/--no-qos`: what is sent, what is shown, and no half-done change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cli_fake_api import FakeApi, Invoke


REFUSED = ("port p1 is plugged on node dpu-bm-1, whose agent could not apply the packet-rate limit, "
           "so no limit was changed: ovs-ofctl: connection refused")


@pytest.fixture
def port(dpustack: Invoke, fake: FakeApi) -> dict[str, Any]:
    """A port; the fake answers PUT/DELETE /v1/ports/{id}/qos as the controller does: 202 with an
    operation that gives the port its limits when it succeeds."""
    dpustack("network", "create", "net1", "--subnet", "10.10.0.0/24")
    dpustack("security-group", "create", "web")
    created = json.loads(dpustack("port", "create", "--network", "net1", "-f", "json").stdout)
    fake.find("ports", created["id"])["qos"] = {"bps": None, "pps": None}
    return created


def _calls(fake: FakeApi) -> list[tuple[str, str, Any]]:
    """The requests made, but for the polls of operations."""
    return [(r.method, r.url.path, json.loads(r.content) if r.content else None) for r in fake.requests
            if not r.url.path.startswith("/v1/operations/")]


def _polled(fake: FakeApi) -> bool:
    return any(r.url.path.startswith("/v1/operations/") for r in fake.requests)


def test_qos_bps_is_put_keeping_the_other_limit_and_shown(dpustack: Invoke, fake: FakeApi, port) -> None:
    fake.requests.clear()
    result = dpustack("port", "set", port["id"], "--qos-bps", "2000000")
    assert result.exit_code == 0, result.output
    assert _calls(fake) == [("GET", f"/v1/ports/{port['id']}", None),
                            ("PUT", f"/v1/ports/{port['id']}/qos", {"bps": 2000000, "pps": None}),
                            ("GET", f"/v1/ports/{port['id']}", None)]  # the port once the operation succeeded
    assert _polled(fake) and "✓ set_limits" in result.stderr and "✓ apply_on_node" in result.stderr
    assert any("qos" in line and "bps=2000000" in line for line in result.stdout.splitlines())
    cleared = dpustack("port", "set", port["id"], "--no-qos", "-f", "json")
    assert cleared.exit_code == 0, cleared.output
    assert _calls(fake)[-2] == ("DELETE", f"/v1/ports/{port['id']}/qos", None)
    assert json.loads(cleared.stdout)["qos"] == {"bps": None, "pps": None}
    shown = dpustack("port", "show", port["id"])
    assert any("qos" in line and "-" in line for line in shown.stdout.splitlines())


def test_a_packet_rate_is_put_and_a_refused_one_is_a_readable_error(dpustack: Invoke, fake: FakeApi,
                                                                     port) -> None:
    result = dpustack("port", "set", port["id"], "--qos-pps", "1000", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["qos"] == {"bps": None, "pps": 1000}
    fake.fail_step = ("apply_on_node", REFUSED)  # the node's switch refuses the next limit
    refused = dpustack("port", "set", port["id"], "--qos-pps", "13")
    assert refused.exit_code == 1 and "could not apply the packet-rate limit" in refused.stderr
    assert ("error: qos of port " + port["id"] + " failed at step 'apply_on_node': port p1 is plugged"
            in " ".join(refused.stderr.split()))
    assert "Traceback" not in refused.output
    assert fake.find("ports", port["id"])["qos"] == {"bps": None, "pps": 1000}
    fake.fail_step = None
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
