"""A live migration that meets a node it cannot reach, or a controller that dies, finishes forward once the guest
moved: the target's agent unreachable while the NICs are plugged there, the source's while it cleans up, a
controller that dies (in process, as tests/integration/controller/test_migration_faults.py does) while the
memory moves or right after, with the source's agent restarted meanwhile too. The guest moves once, and ends
ACTIVE on the target with nothing left on the source; a node that stays away ends the move in ERROR with a fault
that says where the guest runs."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import httpx
import pytest

from dpustack.drivers.hypervisor import DomainState
from faults import assert_clean
from moves import VM1, VM2, build_with_data, claims, nics, server
from test_live_migrate_operation import _agent_instances, _assert_on, _guest, live_cloud  # noqa: F401


class WorkerKilled(BaseException):
    """Stops a worker mid-step, as the death of its process (kill -9) would: no undo, no failure recorded."""


def _start(cloud, name: str, node: str) -> dict[str, Any]:
    return cloud.call("POST", f"/v1/instances/{name}/migrate", {"live": True, "node": node}, expect=202)


def _step(cloud, op: dict[str, Any], name: str) -> dict[str, Any]:
    shown = cloud.call("GET", f"/v1/operations/{op['id']}")
    return next(s for s in shown["steps"] if s["name"] == name)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _intercept(cloud, matches: Callable[[httpx.Request], bool],
               then: Callable[[httpx.Request, Callable[[httpx.Request], httpx.Response]], httpx.Response]) -> list[str]:
    """Route the first agent call `matches` picks through `then` (given the request and the real delivery);
    the paths it picked."""
    deliver = cloud.router.handle_request
    picked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if not picked and matches(request):
            picked.append(request.url.path)
            return then(request, deliver)
        return deliver(request)

    cloud.router.handle_request = handle  # type: ignore[method-assign]
    return picked


def _call(method: str, host: str, path_end: str) -> Callable[[httpx.Request], bool]:
    def matches(request: httpx.Request) -> bool:
        path = request.url.path
        return (request.method == method and request.url.host == host and path.startswith("/v1/instances/")
                and path.endswith(path_end) and (method != "DELETE" or path.count("/") == 3))
    return matches


def _goes_down(cloud, host: str) -> Callable[[httpx.Request, Any], httpx.Response]:
    def then(request: httpx.Request, deliver: Any) -> httpx.Response:
        cloud.router.down.add(host)
        return deliver(request)  # refused: the node is down from now on
    return then


@pytest.mark.parametrize("host,method,path_end,step", [
    (VM2, "POST", "/receive", "receive_on_target"),
    (VM1, "DELETE", "", "clean_up_source"),
])
def test_a_node_away_after_the_switch_over_is_waited_for_and_the_move_completes(
        live_cloud, host, method, path_end, step):
    cloud = live_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports, boots = nics(cloud, "v1"), _guest(cloud, VM1, before["id"]).boots
    [held] = _agent_instances(cloud, VM1)
    picked = _intercept(cloud, _call(method, host, path_end), _goes_down(cloud, host))

    started = _start(cloud, "v1", VM2)
    _wait_for(lambda: _step(cloud, started, step)["status"] == "waiting", f"{step} waits for {host}")
    waiting = _step(cloud, started, step)
    assert f"node {host}: agent unreachable" in waiting["detail"]["last_error"], waiting
    assert "failed; trying again in" in waiting["detail"]["waiting"] and waiting["error"] is None, waiting
    assert server(cloud, "v1")["status"] == "MIGRATING"
    assert _guest(cloud, VM2, before["id"]).state == DomainState.RUNNING  # it moved: it runs on there meanwhile
    time.sleep(0.5)
    cloud.router.down.discard(host)

    op = cloud.wait(started)

    assert picked and op["status"] == "succeeded", op
    done = next(s for s in op["steps"] if s["name"] == step)
    assert done["detail"]["attempts"] >= 1 and "waiting" not in done["detail"] and done["error"] is None, done
    _assert_on(cloud, "v1", VM2, before, ports, boots, held["slots"])
    assert_clean(cloud, VM1)
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (2, 1024, 1)


def test_a_target_that_stays_away_after_the_switch_over_ends_in_error_saying_where_the_guest_runs(live_cloud):
    cloud = live_cloud
    cloud.context.settings.step_retry_seconds = 1.0
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    _intercept(cloud, _call("POST", VM2, "/receive"), _goes_down(cloud, VM2))

    op = cloud.wait(_start(cloud, "v1", VM2))

    assert op["status"] == "failed" and op["error"].startswith("receive_on_target: node dpu-vm-2: agent unreachable")
    assert "given up after" in op["error"] and "the guest runs on dpu-vm-2 (the target)" in op["error"], op["error"]
    shown = server(cloud, "v1")
    assert (shown["status"], shown["node"], shown["fault"]["step"]) == ("ERROR", VM2, "receive_on_target")
    assert "the guest runs on dpu-vm-2" in shown["fault"]["message"]
    assert _guest(cloud, VM2, before["id"]).state == DomainState.RUNNING
    cloud.router.down.discard(VM2)
    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"
    assert_clean(cloud, VM1)
    assert_clean(cloud, VM2)
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (0, 0, 0)


def _dies_while_it_runs(request: httpx.Request, deliver: Any) -> httpx.Response:
    """The call reaches the source's agent, which goes on migrating; the controller dies before the answer."""
    threading.Thread(target=deliver, args=(request,), daemon=True).start()
    time.sleep(0.3)
    raise WorkerKilled(request.url.path)


def _dies_once_answered(request: httpx.Request, deliver: Any) -> httpx.Response:
    deliver(request)
    raise WorkerKilled(request.url.path)  # the guest moved; the controller never hears


@pytest.mark.parametrize("when,restart_source", [
    ("while the memory moves", False),
    ("once the guest moved", False),
    ("while the memory moves", True),
    ("once the guest moved", True),
])
def test_a_controller_that_dies_during_migrate_live_resumes_it_without_a_second_migration(
        live_cloud, when, restart_source):
    cloud = live_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports, boots = nics(cloud, "v1"), _guest(cloud, VM1, before["id"]).boots
    [held] = _agent_instances(cloud, VM1)
    source = cloud.drivers(VM1).hypervisor
    source.migration_seconds = 3.0 if when == "while the memory moves" else 0
    source.faults.clear()
    then = _dies_while_it_runs if when == "while the memory moves" else _dies_once_answered
    picked = _intercept(cloud, _call("POST", VM1, "/migrate-live"), then)

    started = _start(cloud, "v1", VM2)
    _wait_for(lambda: bool(picked), "the migration was asked for")
    if restart_source:  # its migrations in flight are forgotten; its hypervisor goes on
        cloud.restart_agent(VM1)
    op = cloud.wait(started, timeout=30)

    assert op["status"] == "succeeded", op["error"]
    assert source.faults.calls.count("migrate_live") == 1, source.faults.calls  # the guest moved once
    live_step = next(s for s in op["steps"] if s["name"] == "migrate_live")
    assert live_step["detail"]["to"] == cloud.drivers(VM2).hypervisor.migration_uri
    if not restart_source or when == "once the guest moved":  # its measures kept on the source's record
        assert live_step["detail"]["data_total"] == 1024 << 20, live_step
    _assert_on(cloud, "v1", VM2, before, ports, boots, held["slots"])
    assert_clean(cloud, VM1)
    cloud.agents[VM1].state.service.reconciler.run()  # the source does not define the guest it let go again
    assert source.state(before["id"]) == DomainState.MISSING
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (2, 1024, 1)
