"""Live migration through the real controller API, between two real vm-node agents whose memory hypervisors
reach each other (`memory:///<host>`): a running VM ends on the target with the same ports, volumes and guest
(never rebooted), nothing on the source, no confirm; a fault in each mutating call in turn, and an abort while
its memory moves, leave it running on its source with its NICs plugged back and nothing on the target; what
cannot move live is a 409 saying why."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from dpustack.cli import context
from dpustack.cli.main import app
from dpustack.client import Client
from dpustack.drivers.hypervisor import DomainState
import faults
from faults import assert_clean
from harness import Cloud
from moves import BM1, CELLS, VM1, VM2, build_with_data, claims, mix, nics, server

STEPS = ["claim_target", "build_on_target", "prepare_on_source", "migrate_live", "bind_ports_on_target",
         "receive_on_target", "clean_up_source", "finish_migrate"]


@pytest.fixture
def live_cloud(tmp_path, database_url) -> Iterator[Cloud]:
    """`moves.mix`, its vm nodes' pretend hosts of the lab form (their guests' disks on vhost-user-blk sockets,
    which migrate live), and a third vm node whose host is named (`host`): each reaches the others'. A step
    that retries (after the switch-over) waits 0.05 s, doubling, for up to 10 s; a 1 s operation lease."""
    cloud = Cloud(tmp_path, database_url, nodes=2, lease_seconds=1.0, step_retry_interval=0.05,
                  step_retry_seconds=10.0)
    try:
        yield live_nodes(cloud)
    finally:
        cloud.close()


def live_nodes(cloud: Cloud) -> Cloud:
    """The nodes and flavors of `live_cloud` in `cloud`."""
    mixed = mix(cloud, vm_host={"form": "lab"})
    mixed.add_node("dpu-vm-3", vm_cells=CELLS, vm_host={"form": "lab", "host": "hliveorch-host-3"})
    assert mixed.drivers("dpu-vm-3").hypervisor.migration_uri == "memory:///hliveorch-host-3"
    assert mixed.drivers(VM1).hypervisor.migration_uri != mixed.drivers(VM2).hypervisor.migration_uri
    return mixed


def live(cloud, name: str, **body: Any) -> dict[str, Any]:
    return cloud.act("POST", f"/v1/instances/{name}/migrate", {"live": True, **body})


def _agent_instances(cloud, hostname: str) -> list[dict[str, Any]]:
    return cloud.router.agents[hostname].get("/v1/instances").json()


def _guest(cloud, hostname: str, uuid: str) -> Any:
    return cloud.drivers(hostname).hypervisor.held[uuid]


def _net_functions_plugged(cloud, hostname: str, uuid: str) -> list[str]:
    return sorted(alias for alias in _guest(cloud, hostname, uuid).live if alias.startswith("net-"))


def _assert_on(cloud, name: str, hostname: str, before: dict[str, Any], ports: list[Any], boots: int,
               slots: dict[str, int], why: Any = None) -> None:
    """ACTIVE on `hostname` as it was: same ports, volumes, guest (not booted again), devices in their slots."""
    after = server(cloud, name)
    assert (after["status"], after["node"], after["flavor"], after["source_node"], after["fault"]) == (
        "ACTIVE", hostname, before["flavor"], None, None), (why, after)
    assert nics(cloud, name) == ports and after["volumes"] == before["volumes"], why
    guest = _guest(cloud, hostname, after["id"])
    assert (guest.state, guest.boots) == (DomainState.RUNNING, boots), why
    assert _net_functions_plugged(cloud, hostname, after["id"]) == sorted(f"net-{p[0]}" for p in ports), why
    [held] = _agent_instances(cloud, hostname)
    assert (held["uuid"], held["slots"]) == (after["id"], slots), why
    for volume_id in after["volumes"]:
        volume = cloud.call("GET", f"/v1/volumes/{volume_id}")
        assert (volume["status"], volume["operation_id"]) == ("in-use", None), (why, volume)
        assert [a["node"] for a in volume["attachments"]] == [hostname], (why, volume)
    assert len(cloud.volume_backend.exports) == len(after["volumes"]), (why, cloud.volume_backend.exports)
    bound = {p["id"]: p for p in cloud.call("GET", "/v1/ports")}
    assert {bound[p[0]]["binding_host_id"] for p in ports} == {hostname}, why
    assert {bound[p[0]]["binding_profile"]["function_id"] for p in ports} == {f"net-{p[0]}" for p in ports}, why


def test_a_running_vm_moves_live_to_the_target_with_its_ports_volumes_and_guest(live_cloud):
    cloud = live_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports, boots = nics(cloud, "v1"), _guest(cloud, VM1, before["id"]).boots
    [held] = _agent_instances(cloud, VM1)

    op = live(cloud, "v1", node=VM2)

    assert (op["action"], op["status"]) == ("live_migrate", "succeeded"), op["error"]
    assert [s["name"] for s in op["steps"]] == STEPS
    _assert_on(cloud, "v1", VM2, before, ports, boots, held["slots"])
    assert_clean(cloud, VM1)
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (2, 1024, 1)  # no confirm
    steps = {s["name"]: s["detail"] for s in op["steps"]}
    assert steps["build_on_target"]["migration_uri"] == cloud.drivers(VM2).hypervisor.migration_uri
    finish = steps["finish_migrate"]
    assert (finish["from"], finish["to"], finish["downtime_ms"]) == (VM1, VM2, 0)
    assert finish["duration_ms"] >= finish["nic_gap_ms"] >= finish["migration_ms"] >= 0, finish
    assert steps["migrate_live"]["data_total"] == 1024 << 20

    back = live(cloud, "v1")  # the scheduler's choice: a vm node but its own
    assert back["status"] == "succeeded", back
    assert server(cloud, "v1")["node"] in (VM1, "dpu-vm-3")


def test_what_cannot_move_live_is_refused_saying_why(live_cloud):
    cloud = live_cloud
    build_with_data(cloud, "v1", "vm.small", VM1)
    assert cloud.build("b1", flavor="bm.small", node=BM1)["status"] == "succeeded"

    def refusal(name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = cloud.api.post(f"/v1/instances/{name}/migrate", json={"live": True, **body})
        assert answer.status_code == 409, answer.text
        return answer.json()["error"]

    assert refusal("b1", {"flavor": "vm.small"})["field"] == "instance"
    other = refusal("v1", {"flavor": "vm.big"})
    assert other["field"] == "flavor" and "a live migration keeps the flavor of 'v1'" in other["message"]
    assert cloud.act("POST", "/v1/instances/v1/stop")["status"] == "succeeded"
    off = refusal("v1", {})
    assert off["field"] == "instance" and "is SHUTOFF: only a running VM migrates live" in off["message"]
    idle = cloud.api.post("/v1/instances/v1/migrate-abort")
    assert idle.status_code == 409 and "has no live migration in progress" in idle.json()["error"]["message"]
    assert server(cloud, "v1")["node"] == VM1 and claims(cloud, VM2) == (0, 0, 0)


def test_a_fault_in_each_call_of_a_live_migration_in_turn(live_cloud):
    """Before the switch-over: running on the source as it was, its NICs plugged back, nothing on the target.
    After it: the step is tried again and the move completes, ACTIVE on the target, nothing on the source."""
    cloud = live_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports, boots = nics(cloud, "v1"), _guest(cloud, VM1, before["id"]).boots
    [held] = _agent_instances(cloud, VM1)
    faults.clear(cloud, VM1, VM2)
    assert live(cloud, "v1", node=VM2)["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, VM1) + faults.mutating_calls(cloud, VM2)
    assert {c[0] for c in calls} == {VM1, VM2} and (VM1, "hypervisor", "migrate_live", 0) in calls, calls
    assert live(cloud, "v1", node=VM1)["status"] == "succeeded"
    _assert_on(cloud, "v1", VM1, before, ports, boots, held["slots"], "the probe's way back")
    after_switch = []

    for hostname, driver, operation, nth in calls:
        why = (hostname, driver, operation, nth)
        faults.clear(cloud, VM1, VM2)
        injector = faults.arm(cloud, why)
        op = live(cloud, "v1", node=VM2)
        assert injector.armed == 0, why
        if op["status"] == "succeeded":  # after the switch-over: the step went on, and forward
            [retried] = [s for s in op["steps"] if s["detail"].get("attempts")]
            assert STEPS.index(retried["name"]) > STEPS.index("migrate_live"), (why, retried)
            assert retried["detail"]["attempts"] == 1 and retried["error"] is None, (why, retried)
            assert "injected fault" in retried["detail"]["last_error"], (why, retried)
            _assert_on(cloud, "v1", VM2, before, ports, boots, held["slots"], why)
            assert_clean(cloud, VM1)
            assert (claims(cloud, VM1), claims(cloud, VM2)) == ((0, 0, 0), (2, 1024, 1)), why
            after_switch.append(why)
            faults.clear(cloud, VM1, VM2)
            assert live(cloud, "v1", node=VM1)["status"] == "succeeded", why
            continue
        assert "injected fault" in op["error"], (why, op)
        failed = next(s["name"] for s in op["steps"] if s["status"] == "failed")
        assert STEPS.index(failed) <= STEPS.index("migrate_live"), (why, op["steps"])
        assert "undone" in {s["status"] for s in op["steps"]}, (why, op["steps"])
        _assert_on(cloud, "v1", VM1, before, ports, boots, held["slots"], why)
        assert_clean(cloud, VM2)
        assert (claims(cloud, VM1), claims(cloud, VM2)) == ((2, 1024, 1), (0, 0, 0)), why
    assert after_switch, "a fault after the switch-over was tried too"


def _wait_for(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_an_abort_while_the_memory_moves_leaves_the_vm_running_on_its_source(live_cloud, monkeypatch):
    cloud = live_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports, boots = nics(cloud, "v1"), _guest(cloud, VM1, before["id"]).boots
    [held] = _agent_instances(cloud, VM1)
    source = cloud.drivers(VM1).hypervisor
    source.migration_seconds = 30
    monkeypatch.setattr(context, "make_client", lambda url, token: Client(url, token, transport=cloud.api._transport))

    def dpustack(*args: str):
        return CliRunner().invoke(app, list(args), env={"DPUSTACK_URL": "http://testserver", "COLUMNS": "200",
                                                        "DPUSTACK_TOKEN": cloud.admin_token})

    started = cloud.call("POST", "/v1/instances/v1/migrate", {"live": True, "node": VM2}, expect=202)
    _wait_for(lambda: source.migration_progress(before["id"]) is not None, "the memory moves")
    assert server(cloud, "v1")["status"] == "MIGRATING"
    assert _net_functions_plugged(cloud, VM1, before["id"]) == []  # unplugged for the move

    aborted = dpustack("server", "migrate", "--abort", "v1", "--wait")

    assert aborted.exit_code == 0, aborted.output
    assert "migrate --abort v1: server v1 is ACTIVE on dpu-vm-1" in aborted.stdout
    op = cloud.wait(started)
    assert op["status"] == "failed" and "canceled by client" in op["error"], op
    assert [s["status"] for s in op["steps"][:4]] == ["undone", "undone", "undone", "failed"], op["steps"]
    _assert_on(cloud, "v1", VM1, before, ports, boots, held["slots"])
    assert_clean(cloud, VM2)
    assert (claims(cloud, VM1), claims(cloud, VM2)) == ((2, 1024, 1), (0, 0, 0))

    source.migration_seconds = 0
    moved = dpustack("server", "migrate", "v1", "--live", "--node", VM2, "--wait")
    assert moved.exit_code == 0, moved.output
    assert "server v1 is ACTIVE on dpu-vm-2" in moved.stdout
    late = dpustack("server", "migrate", "--abort", "v1")
    assert late.exit_code == 1 and "has no live migration in progress" in late.stderr
