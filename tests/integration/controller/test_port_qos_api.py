"""Port QoS through the controller API on SQLite and PostgreSQL (database-only backend): what a port
shows, what `PUT`/`DELETE /v1/ports/{id}/qos` accept and refuse, whose ports a project may limit, and
the operation (202) that carries a change out: its steps, its undo and its resumption.
What OVN makes of it is tests/integration/network/test_port_qos.py; what it does to traffic,
tests/integration/lab/test_port_qos_dataplane.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dpustack.controller.orchestrator import Orchestrator, StepContext, workflow_for
from dpustack.controller.services.networks import MAX_QOS_BPS, MAX_QOS_PPS, QOS_ACTION
from dpustack.db.models import Operation, OperationStep, utcnow

NO_NODES = pytest.mark.parametrize("cloud", [0], indirect=True)

UNLIMITED = {"bps": None, "pps": None}


def _port(cloud, token: str | None = None) -> dict[str, Any]:
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"}, token=token)
    return cloud.call("POST", "/v1/ports", {"network": "net1"}, token=token)


def _error(answer) -> tuple[int, str | None, str]:
    error = answer.json()["error"]
    return answer.status_code, error.get("field"), error["message"]


def _change(cloud, path: str, body: Any = None, *, token: str | None = None) -> dict[str, Any]:
    """PUT `body` to a port's QoS path (None: DELETE it) and wait for the operation to end."""
    op = cloud.act("DELETE" if body is None else "PUT", path, body, token=token)
    assert op["action"] == QOS_ACTION and op["instance_id"] is None, op
    return op


def _limit(cloud, path: str, body: Any = None, *, token: str | None = None) -> dict[str, Any]:
    """Change a port's limits as `_change` does, expect success and return the port as it is now."""
    op = _change(cloud, path, body, token=token)
    assert op["status"] == "succeeded", op
    return cloud.call("GET", path.removesuffix("/qos"), token=token)


def _steps(op: dict[str, Any]) -> list[tuple[str, str]]:
    return [(step["name"], step["status"]) for step in op["steps"]]


@NO_NODES
def test_a_port_shows_its_limits_which_put_replaces_and_delete_clears(cloud):
    port = _port(cloud)
    assert port["qos"] == UNLIMITED
    path = f"/v1/ports/{port['id']}/qos"
    limited = _limit(cloud, path, {"bps": 2_000_000})
    assert limited["id"] == port["id"] and limited["qos"] == {"bps": 2_000_000, "pps": None}
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 2_000_000, "pps": None}
    assert [p["qos"] for p in cloud.call("GET", "/v1/ports")] == [{"bps": 2_000_000, "pps": None}]
    assert _limit(cloud, path, {"bps": 5, "pps": None})["qos"] == {"bps": 5, "pps": None}
    assert _limit(cloud, path, {})["qos"] == UNLIMITED  # absent: no limit
    _limit(cloud, path, {"bps": MAX_QOS_BPS})
    cleared = _limit(cloud, path)
    assert cleared["id"] == port["id"] and cleared["qos"] == UNLIMITED
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == UNLIMITED
    assert _limit(cloud, path)["qos"] == UNLIMITED  # clearing twice is fine


@NO_NODES
def test_a_change_is_accepted_as_an_operation_of_the_ports_project(cloud):
    cloud.call("POST", "/v1/projects", {"name": "blue"})
    blue = cloud.call("POST", "/v1/tokens", {"project": "blue", "role": "member"})["token"]
    port = _port(cloud, token=blue)
    cloud.orchestrator.stop()  # the change waits for a worker
    answer = cloud.api.put(f"/v1/ports/{port['id']}/qos", json={"bps": 1_000_000})
    assert answer.status_code == 202, answer.text
    op = answer.json()
    assert (op["action"], op["status"], op["project_id"]) == (QOS_ACTION, "pending", port["project_id"])
    assert _steps(op) == [("set_limits", "pending"), ("apply_on_node", "pending")]
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == UNLIMITED  # not before it runs
    assert [o["id"] for o in cloud.call("GET", "/v1/operations", token=blue)] == [op["id"]]
    worker = Orchestrator(cloud.context, workers=1)  # made by the admin, the port's project sees it run
    worker.start()
    try:
        final = cloud.wait(op, token=blue)
    finally:
        worker.stop()
    assert final["status"] == "succeeded" and _steps(final) == [("set_limits", "done"), ("apply_on_node", "done")]
    assert final["steps"][0]["detail"] == {"old_limits": UNLIMITED}
    assert "not bound" in final["steps"][1]["detail"]["skipped"]
    assert cloud.call("GET", f"/v1/ports/{port['id']}", token=blue)["qos"] == {"bps": 1_000_000, "pps": None}


@NO_NODES
def test_a_second_change_while_one_runs_is_a_409_and_changes_nothing(cloud):
    port = _port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    cloud.orchestrator.stop()
    first = cloud.call("PUT", path, {"bps": 1_000_000}, expect=202)
    for method, body in (("PUT", {"bps": 2_000_000}), ("DELETE", None)):
        status, field, message = _error(cloud.api.request(method, path, json=body))
        assert (status, field) == (409, "port") and first["id"] in message, message
    other = cloud.call("POST", "/v1/ports", {"network": "net1"})
    cloud.call("PUT", f"/v1/ports/{other['id']}/qos", {"pps": 10}, expect=202)  # another port is not busy
    worker = Orchestrator(cloud.context, workers=1)
    worker.start()
    try:
        assert cloud.wait(first)["status"] == "succeeded"
        assert _limit(cloud, path, {"bps": 2_000_000})["qos"] == {"bps": 2_000_000, "pps": None}  # ended: free
    finally:
        worker.stop()


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
    _limit(cloud, path, {"bps": 3_000_000})
    answer = cloud.api.put(path, json=body)
    assert _error(answer)[:2] == (400, field), answer.text
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": None}


@NO_NODES
def test_a_packet_rate_limit_of_an_unplugged_port_is_stored_for_its_next_plug(cloud):
    port = _port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    assert _limit(cloud, path, {"bps": 1_000_000, "pps": 1000})["qos"] == {"bps": 1_000_000, "pps": 1000}
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 1_000_000, "pps": 1000}
    assert _limit(cloud, path, {"pps": MAX_QOS_PPS})["qos"] == {"bps": None, "pps": MAX_QOS_PPS}
    assert _limit(cloud, path)["qos"] == UNLIMITED


@NO_NODES
def test_a_project_limits_only_its_own_ports(cloud):
    for name in ("red", "blue"):
        cloud.call("POST", "/v1/projects", {"name": name})
    red, blue = (cloud.call("POST", "/v1/tokens", {"project": name, "role": "member"})["token"]
                 for name in ("red", "blue"))
    port = _port(cloud, token=blue)
    path = f"/v1/ports/{port['id']}/qos"
    assert _limit(cloud, path, {"bps": 1_000_000}, token=blue)["qos"]["bps"] == 1_000_000
    for method, body in (("PUT", {"bps": 1}), ("DELETE", None)):
        answer = cloud.api.request(method, path, json=body, headers={"Authorization": f"Bearer {red}"})
        assert _error(answer)[:2] == (404, "port"), answer.text
        # a refused body changes nothing either: another project's port is not found, whatever is asked
        answer = cloud.api.put(path, json={"pps": 5}, headers={"Authorization": f"Bearer {red}"})
        assert answer.status_code == 404
    assert cloud.call("GET", f"/v1/ports/{port['id']}", token=blue)["qos"]["bps"] == 1_000_000
    assert _limit(cloud, path)["qos"] == UNLIMITED  # the admin may
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
    assert _limit(cloud, path, {"bps": 2_000_000, "pps": 1000})["qos"] == {"bps": 2_000_000, "pps": 1000}
    assert _limit_on_node(switch, port) == 1000
    op = _change(cloud, path, {"pps": 2500})
    assert op["steps"][1]["detail"] == {"node": port["binding_host_id"]}
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": None, "pps": 2500}
    assert _limit_on_node(switch, port) == 2500
    calls = len([c for c in switch.faults.calls if c == "set_packet_rate"])
    op = _change(cloud, path, {"bps": 5_000_000, "pps": 2500})  # the packet rate did not change: not re-sent
    assert op["status"] == "succeeded" and op["steps"][1]["detail"] == {"skipped": "the packet rate did not change"}
    assert len([c for c in switch.faults.calls if c == "set_packet_rate"]) == calls
    assert _limit(cloud, path)["qos"] == UNLIMITED
    assert _limit_on_node(switch, port) is None


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_packet_rate_the_agent_refuses_fails_the_operation_and_the_port_keeps_its_limits(cloud):
    port, switch = _plugged_port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    _limit(cloud, path, {"bps": 3_000_000, "pps": 1000})
    switch.faults.arm("set_packet_rate", message="ovs-ofctl: br-int.mgmt: connection refused")
    op = _change(cloud, path, {"bps": 1_000_000, "pps": 500})
    assert op["status"] == "failed" and _steps(op) == [("set_limits", "undone"), ("apply_on_node", "failed")]
    message = op["error"]
    assert message.startswith("apply_on_node: ") and op["steps"][1]["error"] == message.removeprefix("apply_on_node: ")
    assert "could not apply the packet-rate limit" in message and "connection refused" in message, message
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": 1000}
    assert _limit_on_node(switch, port) == 1000  # the agent kept its old limit too

    cloud.router.down.add(port["binding_host_id"])  # an agent that cannot be reached: the same
    op = _change(cloud, path)
    assert op["status"] == "failed" and "agent unreachable" in op["error"], op
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 3_000_000, "pps": 1000}
    cloud.router.down.clear()
    assert _limit(cloud, path)["qos"] == UNLIMITED and _limit_on_node(switch, port) is None
    assert cloud.call("GET", "/v1/instances/web1")["status"] == "ACTIVE"  # no instance is at fault


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_change_resumed_after_its_worker_died_keeps_the_old_limits_for_its_undo(cloud):
    port, switch = _plugged_port(cloud)
    path = f"/v1/ports/{port['id']}/qos"
    _limit(cloud, path, {"pps": 1000})
    cloud.orchestrator.stop()
    op = cloud.call("PUT", path, {"pps": 500}, expect=202)
    with cloud.context.transaction() as session:  # a worker recorded the limits, then died before saying so
        row = session.get_one(Operation, op["id"])
        ctx = StepContext(cloud.context, row.id, row.project_id, None, dict(row.params), {})
    workflow_for(QOS_ACTION).steps(ctx.params)[0].do(ctx)
    with cloud.context.transaction() as session:
        row = session.get_one(Operation, op["id"])
        row.status, row.worker, row.heartbeat_at = "running", "dead", utcnow() - timedelta(minutes=10)
        session.query(OperationStep).filter_by(operation_id=op["id"], index=0).one().status = "running"
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": None, "pps": 500}
    switch.faults.arm("set_packet_rate", message="ovs-ofctl: br-int.mgmt: connection refused")
    worker = Orchestrator(cloud.context, workers=1)
    worker.start()
    try:
        final = cloud.wait(op)
    finally:
        worker.stop()
    assert final["status"] == "failed" and _steps(final) == [("set_limits", "undone"), ("apply_on_node", "failed")]
    assert final["steps"][0]["detail"] == {"old_limits": {"bps": None, "pps": 1000}}  # not its own 500
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": None, "pps": 1000}
    assert _limit_on_node(switch, port) == 1000


@pytest.mark.parametrize("cloud", [1], indirect=True)
def test_a_port_limited_before_it_is_plugged_is_plugged_with_its_packet_rate(cloud):
    cloud.setup_basics()
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    _limit(cloud, f"/v1/ports/{port['id']}/qos", {"pps": 4000})
    assert cloud.build("web1", networks=[{"port": port["id"]}])["status"] == "succeeded"
    port = cloud.call("GET", f"/v1/ports/{port['id']}")
    assert _limit_on_node(cloud.drivers(port["binding_host_id"]).switch, port) == 4000

    other = cloud.call("POST", "/v1/ports", {"network": "net1"})
    _limit(cloud, f"/v1/ports/{other['id']}/qos", {"pps": 300})
    assert cloud.act("POST", "/v1/instances/web1/nics", {"port": other["id"]})["status"] == "succeeded"
    other = cloud.call("GET", f"/v1/ports/{other['id']}")
    assert _limit_on_node(cloud.drivers(other["binding_host_id"]).switch, other) == 300
