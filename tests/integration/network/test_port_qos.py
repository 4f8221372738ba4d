"""Port QoS as OVN sees it: the controller keeps one from-lport QoS row per limited port in a real
northbound database, and ovn-northd turns it into a meter action (set_meter) for the chassis.
A change of limits is an operation (202), whose first step, `set_limits`, writes the row.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpustack.controller.netbackend import PortSpec
from dpustack.controller.netbackend.ovn import OvnBackend
from harness import Cloud
from ovn import OvnCentral


@pytest.fixture(autouse=True)
def net1(cloud: Cloud) -> dict[str, Any]:
    """Every test here starts with network net1 (10.10.0.0/24)."""
    return cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})


def qos_rows(ovn: OvnCentral) -> list[dict[str, Any]]:
    """Every QoS row: {uuid, direction, priority, match, bandwidth, external_ids}."""
    table = json.loads(ovn.nbctl("--format=json", "--columns=_uuid,direction,priority,match,bandwidth,external_ids",
                                 "list", "QoS"))
    rows = []
    for uuid, direction, priority, match, bandwidth, external_ids in table["data"]:
        rows.append({"uuid": uuid[1], "direction": direction, "priority": priority, "match": match,
                     "bandwidth": dict(bandwidth[1]), "external_ids": dict(external_ids[1])})
    return rows


def switch_of(network: dict[str, Any]) -> str:
    return f"dps-{network['id']}"


def set_qos(cloud: Cloud, port: dict[str, Any], body: dict[str, Any] | None = None) -> dict[str, Any]:
    """PUT `body` as the port's limits (None: DELETE them) and wait for the operation to succeed."""
    op = cloud.act("DELETE" if body is None else "PUT", f"/v1/ports/{port['id']}/qos", body)
    assert op["status"] == "succeeded", op
    return op


def test_a_limit_is_one_from_lport_qos_row_that_northd_turns_into_a_meter(cloud, ovn):
    network = cloud.call("GET", "/v1/networks/net1")
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    other = cloud.call("POST", "/v1/ports", {"network": "net1"})
    assert qos_rows(ovn) == []
    set_qos(cloud, port, {"bps": 2_000_000})
    [row] = qos_rows(ovn)
    assert row == {"uuid": row["uuid"], "direction": "from-lport", "priority": 2002,
                   "match": f'inport == "{port["id"]}"', "bandwidth": {"rate": 2000, "burst": 1600},
                   "external_ids": {"dpustack:port_id": port["id"]}}
    assert ovn.nbctl("qos-list", switch_of(network)) == \
        f'from-lport  2002 (inport == "{port["id"]}") rate=2000 burst=1600'
    ovn.nbctl("--wait=sb", "sync")
    meters = [line for line in ovn.sbctl("lflow-list").splitlines() if "set_meter" in line]
    assert len(meters) == 1 and "ls_in_qos_meter" in meters[0] and "set_meter(2000, 1600)" in meters[0], meters

    # A new limit updates the same row (bits/s rounded up to kbit/s); the other port stays unlimited.
    set_qos(cloud, port, {"bps": 3_500_001})
    [changed] = qos_rows(ovn)
    assert changed["uuid"] == row["uuid"] and changed["bandwidth"] == {"rate": 3501, "burst": 2801}
    set_qos(cloud, other, {"bps": 1000})
    assert {r["external_ids"]["dpustack:port_id"]: r["bandwidth"] for r in qos_rows(ovn)} == {
        port["id"]: {"rate": 3501, "burst": 2801}, other["id"]: {"rate": 1, "burst": 16}}

    set_qos(cloud, port)
    assert [r["external_ids"]["dpustack:port_id"] for r in qos_rows(ovn)] == [other["id"]]
    set_qos(cloud, port, {})
    assert len(qos_rows(ovn)) == 1
    cloud.call("DELETE", f"/v1/ports/{other['id']}", expect=204)  # its limit goes with it
    assert qos_rows(ovn) == []


def test_a_limit_outlives_binding_and_unbinding_and_goes_with_the_port(cloud, ovn):
    cloud.call("POST", "/v1/flavors", {"name": "bm.small", "vcpus": 8, "ram": 16384, "disk": 40, "type": "bm"})
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    set_qos(cloud, port, {"bps": 10_000_000})
    body = {"name": "web1", "flavor": "bm.small", "networks": [{"port": port["id"]}]}
    assert cloud.act("POST", "/v1/instances", body)["status"] == "succeeded"
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["status"] == "ACTIVE"
    assert [r["bandwidth"]["rate"] for r in qos_rows(ovn)] == [10_000]  # binding re-states the limit
    assert cloud.act("DELETE", "/v1/instances/web1")["status"] == "succeeded"
    assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 10_000_000, "pps": None}
    assert [r["bandwidth"]["rate"] for r in qos_rows(ovn)] == [10_000]
    cloud.call("DELETE", f"/v1/ports/{port['id']}", expect=204)
    assert qos_rows(ovn) == []


def test_ensure_port_repairs_drift_and_leaves_rows_that_are_not_its_own(cloud, ovn):
    network = cloud.call("GET", "/v1/networks/net1")
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    set_qos(cloud, port, {"bps": 2_000_000})
    switch = switch_of(network)
    [ours] = qos_rows(ovn)
    ovn.nbctl("set", "QoS", ours["uuid"], "bandwidth:rate=1")  # someone changed it by hand
    ovn.nbctl("--", "--id=@q", "create", "QoS", "direction=to-lport", "priority=7", 'match="ip4"',
              "bandwidth:rate=5", f'external_ids:"dpustack:port_id"="{port["id"]}"',
              "--", "add", "Logical_Switch", switch, "qos_rules", "@q")  # a stray row tagged as the port's
    ovn.nbctl("qos-add", switch, "to-lport", "100", 'outport == "elsewhere"', "rate=10")  # not dpustack's
    backend = cloud.context.network
    spec = PortSpec(id=port["id"], network_id=network["id"], mac=port["mac_address"],
                    ip=port["fixed_ips"][0]["ip_address"], subnet_id=network["subnets"][0]["id"],
                    qos_bps=2_000_000)
    for _ in range(2):  # and a repeat changes nothing
        backend.ensure_port(spec)
        rows = sorted(qos_rows(ovn), key=lambda r: r["priority"])
        assert [(r["priority"], r["bandwidth"]) for r in rows] == [
            (100, {"rate": 10}), (2002, {"rate": 2000, "burst": 1600})]
        assert rows[1]["uuid"] == ours["uuid"]
    backend.delete_port(port["id"])
    assert [r["match"] for r in qos_rows(ovn)] == ['outport == "elsewhere"']


def test_a_packet_rate_is_left_to_the_agent_ovn_gets_only_the_bit_rate(cloud, ovn):
    network = cloud.call("GET", "/v1/networks/net1")
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    backend: OvnBackend = cloud.context.network
    backend.ensure_port(PortSpec(id=port["id"], network_id=network["id"], mac=port["mac_address"], ip=None,
                                 subnet_id=None, qos_pps=1000))
    assert qos_rows(ovn) == []  # OVN QoS rules meter kbit/s only
    set_qos(cloud, port, {"bps": 2_000_000, "pps": 1000})
    answer = cloud.call("GET", f"/v1/ports/{port['id']}")
    assert answer["qos"] == {"bps": 2_000_000, "pps": 1000}  # an unbound port: stored for its next plug
    assert [r["bandwidth"] for r in qos_rows(ovn)] == [{"rate": 2000, "burst": 1600}]


def test_when_ovn_refuses_a_limit_the_port_keeps_its_old_one(cloud, ovn):
    port = cloud.call("POST", "/v1/ports", {"network": "net1"})
    set_qos(cloud, port, {"bps": 2_000_000})
    ovn.stop()
    for method, body in (("PUT", {"bps": 5_000_000}), ("DELETE", None)):
        op = cloud.act(method, f"/v1/ports/{port['id']}/qos", body)
        assert op["status"] == "failed" and op["error"].startswith("set_limits: ") and "OVN" in op["error"], op
        assert [s["status"] for s in op["steps"]] == ["failed", "pending"]  # the agent was not asked
        assert cloud.call("GET", f"/v1/ports/{port['id']}")["qos"] == {"bps": 2_000_000, "pps": None}
