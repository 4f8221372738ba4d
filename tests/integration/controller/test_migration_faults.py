"""A failing hardware or hypervisor call at any point of a cold migration, on the source and on the target in
turn, and a node that cannot be reached mid-migration: the instance ends on exactly one node, the one it was on,
running as it was, with nothing left on the other node and the claims as before the migration. A controller
that dies after an agent call of a migration (simulated in process, as tests/integration/controller/
test_volume_crash.py does) resumes it at that step, to the end."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

import faults
from dpustack.drivers.hypervisor import DomainState
from faults import assert_clean
from harness import Cloud
from moves import BM1, VM1, VM2, build_with_data, claims, mix, nics, server

#: (instance, its flavor, its node, the migration's body, the target)
MOVES = {"vm-to-vm": ("v1", "vm.small", VM1, {"node": VM2}, VM2),
         "bm-to-vm": ("b1", "bm.small", BM1, {"node": VM1, "flavor": "vm.big"}, VM1),
         "vm-to-bm": ("v1", "vm.small", VM1, {"node": BM1, "flavor": "bm.small"}, BM1)}


def _running_on(cloud, hostname: str, uuid: str) -> bool:
    if hostname.startswith("dpu-vm"):
        return cloud.drivers(hostname).hypervisor.state(uuid) == DomainState.RUNNING
    return cloud.drivers(hostname).bmc.power_state() == "on"


def _functions(cloud, hostname: str) -> list[tuple[str, str, str, str | None, str]]:
    """The functions a node's DPU has: (id, kind, type, MAC, BDF): what its host sees, for bare metal."""
    return [(f.id, f.kind, f.type, f.mac, f.bdf) for f in cloud.drivers(hostname).functions.list()]


def _assert_on(cloud, name: str, shown: dict[str, Any], ports: list[Any], node: str, other: str,
               claimed: tuple[Any, Any], why: Any) -> None:
    """The instance as `shown` (its status, flavor, source, volumes, NICs and disks at their host addresses),
    running on `node` alone with its volumes attached and its ports bound there; nothing on `other`; the
    claims of (`node`, `other`) as `claimed`."""
    now = server(cloud, name)
    assert (now["status"], now["node"], now["flavor"], now["source_node"], now["fault"]) == (
        shown["status"], node, shown["flavor"], shown["source_node"], None), (why, now)
    assert nics(cloud, name) == ports and now["volumes"] == shown["volumes"], why
    assert now["numa_placement"] == shown["numa_placement"], why
    assert (now["nics"], now["disks"]) == (shown["nics"], shown["disks"]), why  # the host addresses too
    assert sorted(f[4] for f in _functions(cloud, node)) == sorted(d["bdf"] for d in now["nics"] + now["disks"]), why
    assert _running_on(cloud, node, now["id"]), why
    assert [i["uuid"] for i in cloud.router.agents[node].get("/v1/instances").json()] == [now["id"]], why
    assert_clean(cloud, other)
    assert (claims(cloud, node), claims(cloud, other)) == claimed, why
    for volume_id in now["volumes"]:
        volume = cloud.call("GET", f"/v1/volumes/{volume_id}")
        assert volume["status"] == "in-use" and volume["operation_id"] is None, (why, volume)
        assert [a["node"] for a in volume["attachments"]] == [node], (why, volume)
    assert len(cloud.volume_backend.exports) == len(now["volumes"]), (why, cloud.volume_backend.exports)
    ports_now = {p["id"]: p for p in cloud.call("GET", "/v1/ports")}
    assert {ports_now[p[0]]["binding_host_id"] for p in ports} == {node}, why


@pytest.mark.parametrize("move", sorted(MOVES))
def test_a_fault_in_each_call_of_a_migration_in_turn_leaves_the_instance_where_it_was(mixed_cloud, move):
    cloud = mixed_cloud
    name, flavor, source, body, target = MOVES[move]
    before = build_with_data(cloud, name, flavor, source)
    ports = nics(cloud, name)
    claimed = (claims(cloud, source), claims(cloud, target))
    faults.clear(cloud, source, target)
    assert cloud.act("POST", f"/v1/instances/{name}/migrate", body)["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, source) + faults.mutating_calls(cloud, target)
    assert {c[0] for c in calls} == {source, target}, calls
    assert cloud.act("POST", f"/v1/instances/{name}/migrate-revert")["status"] == "succeeded"
    _assert_on(cloud, name, before, ports, source, target, claimed, "revert of the probe")
    absorbed = []

    for why in calls:
        faults.clear(cloud, source, target)
        armed = faults.arm(cloud, why)
        op = cloud.act("POST", f"/v1/instances/{name}/migrate", body)
        assert armed.armed == 0, why
        if op["status"] == "succeeded":  # a fault the node gets over (a guest's shutdown: the plug is pulled)
            assert (server(cloud, name)["node"], server(cloud, name)["status"]) == (target, "VERIFY_MIGRATE"), why
            assert_clean(cloud, source)
            absorbed.append(why)
            assert cloud.act("POST", f"/v1/instances/{name}/migrate-revert")["status"] == "succeeded", why
        else:
            assert "injected fault" in op["error"], (why, op)
            assert "undone" in {s["status"] for s in op["steps"]}, (why, op["steps"])
        _assert_on(cloud, name, before, ports, source, target, claimed, why)
    assert len(absorbed) <= 1, absorbed  # at most the graceful stop of a VM


@pytest.mark.parametrize("move", sorted(MOVES))
def test_a_fault_in_each_call_of_a_revert_in_turn_leaves_the_instance_on_the_target_to_revert_again(mixed_cloud,
                                                                                                     move):
    cloud = mixed_cloud
    name, flavor, source, body, target = MOVES[move]
    before = build_with_data(cloud, name, flavor, source)
    ports, functions = nics(cloud, name), _functions(cloud, source)
    claimed_before = (claims(cloud, source), claims(cloud, target))
    assert cloud.act("POST", f"/v1/instances/{name}/migrate", body)["status"] == "succeeded"
    moved = server(cloud, name)
    claimed = (claims(cloud, source), claims(cloud, target))
    faults.clear(cloud, source, target)
    assert cloud.act("POST", f"/v1/instances/{name}/migrate-revert")["status"] == "succeeded"
    calls = faults.mutating_calls(cloud, source) + faults.mutating_calls(cloud, target)
    assert {c[0] for c in calls} == {source, target}, calls
    _assert_on(cloud, name, before, ports, source, target, claimed_before, "revert of the probe")
    assert _functions(cloud, source) == functions, "revert of the probe"
    assert cloud.act("POST", f"/v1/instances/{name}/migrate", body)["status"] == "succeeded"
    absorbed = []

    for why in calls:
        faults.clear(cloud, source, target)
        armed = faults.arm(cloud, why)
        op = cloud.act("POST", f"/v1/instances/{name}/migrate-revert")
        assert armed.armed == 0, why
        if op["status"] == "succeeded":  # a fault the node gets over (a guest's shutdown: the plug is pulled)
            _assert_on(cloud, name, before, ports, source, target, claimed_before, why)
            absorbed.append(why)
            assert cloud.act("POST", f"/v1/instances/{name}/migrate", body)["status"] == "succeeded", why
            continue
        assert "injected fault" in op["error"], (why, op)
        statuses = [s["status"] for s in op["steps"]]
        assert set(statuses[:statuses.index("failed")]) <= {"undone"}, (why, op["steps"])
        _assert_on(cloud, name, moved, ports, target, source, claimed[::-1], why)
    assert absorbed in ([], [(target, "hypervisor", "stop", 0)]), absorbed  # at most the graceful stop of a VM

    faults.clear(cloud, source, target)
    assert cloud.act("POST", f"/v1/instances/{name}/migrate-revert")["status"] == "succeeded"
    _assert_on(cloud, name, before, ports, source, target, claimed_before, "the revert retried")
    assert _functions(cloud, source) == functions, "the revert retried"


def test_a_target_that_cannot_be_reached_mid_migration_leaves_the_vm_running_on_its_source(mixed_cloud):
    cloud = mixed_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")
    claimed = (claims(cloud, VM1), claims(cloud, VM2))
    cloud.router.down.add(VM2)  # after the claim (its last report is fresh): the build cannot reach it

    op = cloud.act("POST", "/v1/instances/v1/migrate", {"node": VM2})

    assert op["status"] == "failed" and "unreachable" in op["error"], op
    assert [s["status"] for s in op["steps"][:3]] == ["undone", "undone", "failed"]
    cloud.router.down.discard(VM2)
    _assert_on(cloud, "v1", before, ports, VM1, VM2, claimed, "target down")


def test_a_source_that_cannot_be_reached_is_not_left_by_a_migration(mixed_cloud):
    cloud = mixed_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")
    claimed = (claims(cloud, VM1), claims(cloud, VM2))
    cloud.router.down.add(VM1)

    op = cloud.act("POST", "/v1/instances/v1/migrate", {"node": VM2})

    assert op["status"] == "failed" and op["error"].startswith("stop_on_source: "), op
    assert "unreachable" in op["error"]
    cloud.router.down.discard(VM1)
    _assert_on(cloud, "v1", before, ports, VM1, VM2, claimed, "source down")


class WorkerKilled(BaseException):
    """Stops a worker mid-step, as the death of its process (kill -9) would: no undo, no failure recorded."""


@pytest.fixture
def short_lease_cloud(tmp_path, database_url) -> Iterator[Cloud]:
    """The mixed cloud, with a 1 s operation lease: an operation whose worker died is resumed soon."""
    cloud = Cloud(tmp_path, database_url, nodes=2, lease_seconds=1.0)
    try:
        yield mix(cloud)
    finally:
        cloud.close()


@pytest.mark.parametrize("method,host,path_end", [
    ("POST", VM1, "/stop"),            # stop_on_source
    ("POST", VM2, "/v1/instances"),    # build_on_target
    ("DELETE", VM1, ""),               # clean_up_source
])
def test_a_controller_that_dies_after_each_agent_call_of_a_migration_resumes_it_to_the_end(
        short_lease_cloud, method, host, path_end):
    cloud = short_lease_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")
    deliver = cloud.router.handle_request
    killed = []

    def dies_once_answered(request: httpx.Request) -> httpx.Response:
        answer = deliver(request)
        path = request.url.path
        if (not killed and request.method == method and request.url.host == host and path.endswith(path_end)
                and path.startswith("/v1/instances") and (method != "DELETE" or path.count("/") == 3)):
            killed.append(path)
            raise WorkerKilled(path)  # the node did it; the controller never hears
        return answer

    cloud.router.handle_request = dies_once_answered  # type: ignore[method-assign]

    op = cloud.wait(cloud.call("POST", "/v1/instances/v1/migrate", {"node": VM2}, expect=202), timeout=60)

    assert killed and op["status"] == "succeeded", (killed, op)
    moved = server(cloud, "v1")
    assert (moved["status"], moved["node"], moved["source_node"]) == ("VERIFY_MIGRATE", VM2, VM1)
    assert nics(cloud, "v1") == ports and moved["volumes"] == before["volumes"]
    assert cloud.drivers(VM2).hypervisor.state(moved["id"]) == DomainState.RUNNING
    assert_clean(cloud, VM1)
    assert len(cloud.volume_backend.exports) == len(moved["volumes"])
    assert cloud.call("POST", "/v1/instances/v1/migrate-confirm")["status"] == "ACTIVE"
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (2, 1024, 1)
