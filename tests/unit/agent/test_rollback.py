"""Fault injection: a driver call that fails mid-action undoes everything and leaves nothing behind.

Each case arms a failure on one driver call the action makes (the n-th call
of that operation), either before it takes effect or after it half-happened,
and checks the answer is a readable 502 and the node looks exactly as before.
"""

from __future__ import annotations

from collections import Counter

import pytest

from .conftest import MAC_C, Agent

#: (driver, operation, n-th call) of every driver call a two-NIC, one-volume build makes, in order
BUILD_CALLS = [
    ("functions", "list", 0), ("functions", "create", 0), ("storage", "attach", 0),
    ("functions", "list", 1), ("functions", "create", 1), ("switch", "add_port", 0),
    ("functions", "list", 2), ("functions", "create", 2), ("switch", "add_port", 1),
    ("bmc", "power_state", 0), ("bmc", "power_on", 0),
]
ADD_NIC_CALLS = [("functions", "list", 0), ("functions", "create", 0), ("switch", "add_port", 0)]
ADD_VOLUME_CALLS = [("functions", "list", 0), ("functions", "create", 0), ("storage", "attach", 0)]
REMOVE_NIC_CALLS = [("switch", "del_port", 0), ("functions", "delete", 0)]
REMOVE_VOLUME_CALLS = [("storage", "detach", 0), ("functions", "delete", 0)]
STOP_CALLS = [("bmc", "power_state", 0), ("bmc", "power_off", 0)]
#: calls an action makes whose failure it outlives: an instance works without a serial console
TOLERATED = {"build": [("bmc", "serial_console", 0)]}

ACTIONS = {
    "build": ("POST", "/v1/instances", None),
    "add_nic": ("POST", "/v1/instances/inst-1/nics", {"port_id": "port-c", "mac": MAC_C}),
    "add_volume": ("POST", "/v1/instances/inst-1/volumes", {"volume_id": "vol-data", "uri": "nvmf://x/data"}),
    "remove_nic": ("DELETE", "/v1/instances/inst-1/nics/port-b", None),
    "remove_volume": ("DELETE", "/v1/instances/inst-1/volumes/vol-boot", None),
    "stop": ("POST", "/v1/instances/inst-1/stop", None),
}


def _run(agent: Agent, action: str):
    method, path, body = ACTIONS[action]
    if action == "build":
        return agent.build()
    return agent.call(method, path, json=body) if body else agent.call(method, path)


def _calls_made(agent: Agent) -> list[tuple[str, str, int]]:
    seen: Counter[tuple[str, str]] = Counter()
    calls = []
    for name in ("functions", "switch", "storage", "bmc"):
        for operation in agent.driver(name).faults.calls:
            calls.append((name, operation, seen[(name, operation)]))
            seen[(name, operation)] += 1
    return calls


def _mutating(calls: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    return {c for c in calls if c[1] not in ("list", "list_ports", "get", "power_state", "hw_info", "console",
                                               "serial_console")}


@pytest.mark.parametrize("action, expected", [
    ("build", BUILD_CALLS), ("add_nic", ADD_NIC_CALLS), ("add_volume", ADD_VOLUME_CALLS),
    ("remove_nic", REMOVE_NIC_CALLS), ("remove_volume", REMOVE_VOLUME_CALLS), ("stop", STOP_CALLS),
])
def test_the_fault_cases_cover_every_driver_call_the_action_makes(start_agent, action, expected):
    agent = start_agent()
    if action != "build":
        agent.build()
    agent.forget_calls()

    assert _run(agent, action).status_code == 200

    assert sorted(_calls_made(agent)) == sorted(expected + TOLERATED.get(action, []))
    assert _mutating(_calls_made(agent)) <= set(expected)


def test_a_build_outlives_a_bmc_that_offers_no_serial_console(agent: Agent):
    agent.driver("bmc").faults.arm("serial_console")

    response = agent.build()

    assert response.status_code == 200, response.text
    assert response.json()["instance"]["status"] == "ACTIVE"
    assert agent.get("/v1/instances/inst-1/console/log").status_code == 404


def _assert_failed_and_nothing_changed(agent: Agent, action: str, driver: str, operation: str, nth: int,
                                       after: bool) -> None:
    before = agent.snapshot()
    listed_before = agent.get("/v1/instances").json()
    agent.driver(driver).faults.arm(operation, skip=nth, after=after)

    response = _run(agent, action)

    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"]["code"] == "driver_error"
    assert f"{driver}.{operation}: injected fault" in body["error"]["message"]
    assert "failed at step" in body["error"]["message"]
    assert [s["status"] for s in body["steps"]].count("failed") == 1
    assert not {s["status"] for s in body["steps"]} & {"done", "undo_failed"}
    assert agent.driver(driver).faults.armed == 0
    assert agent.snapshot() == before
    assert agent.get("/v1/instances").json() == listed_before


@pytest.mark.parametrize("after", [False, True], ids=["before-effect", "after-effect"])
@pytest.mark.parametrize("driver, operation, nth", BUILD_CALLS)
def test_a_build_failing_at_any_driver_call_leaves_nothing_behind(agent: Agent, driver, operation, nth, after):
    _assert_failed_and_nothing_changed(agent, "build", driver, operation, nth, after)

    assert agent.hardware() == {"functions": [], "ports": [], "attachments": [], "power": "off"}
    assert agent.records() == {"functions": [], "ports": [], "volumes": [], "instances": []}


def test_a_failed_build_of_a_host_that_was_already_on_leaves_it_on(start_agent):
    agent = start_agent()
    agent.drivers.bmc.power_on()
    agent.drivers.storage.faults.arm("attach")

    assert agent.build().status_code == 502

    assert agent.drivers.bmc.power_state() == "on"


def test_a_failed_build_can_be_retried(agent: Agent):
    agent.drivers.switch.faults.arm("add_port", skip=1)
    assert agent.build().status_code == 502

    response = agent.build()

    assert response.status_code == 200
    assert len(response.json()["instance"]["nics"]) == 2


@pytest.mark.parametrize("after", [False, True], ids=["before-effect", "after-effect"])
@pytest.mark.parametrize("action, driver, operation, nth", [
    *[("add_nic", *call) for call in ADD_NIC_CALLS],
    *[("add_volume", *call) for call in ADD_VOLUME_CALLS],
    *[("remove_nic", *call) for call in REMOVE_NIC_CALLS],
    *[("remove_volume", *call) for call in REMOVE_VOLUME_CALLS],
    *[("stop", *call) for call in STOP_CALLS],
])
def test_a_change_failing_at_any_driver_call_leaves_the_instance_as_it_was(built: Agent, action, driver, operation,
                                                                          nth, after):
    _assert_failed_and_nothing_changed(built, action, driver, operation, nth, after)


def test_a_removed_nic_put_back_by_a_rollback_keeps_its_bdf(built: Agent):
    bdf = built.get("/v1/instances/inst-1").json()["nics"][1]["bdf"]
    built.drivers.functions.faults.arm("delete", after=True)

    assert built.delete("/v1/instances/inst-1/nics/port-b").status_code == 502

    assert built.get("/v1/instances/inst-1").json()["nics"][1]["bdf"] == bdf
    assert built.drivers.functions.get("net-port-b").bdf == bdf


def test_an_undo_that_fails_too_is_reported_and_cleaned_up_by_the_reconciler(agent: Agent):
    agent.drivers.functions.faults.arm("create", skip=1)  # the first NIC's function
    agent.drivers.functions.faults.arm("delete", skip=1)  # the undo of "create storage function"

    response = agent.build()

    assert response.status_code == 502
    assert [s["status"] for s in response.json()["steps"]] == ["undone", "undo_failed", "failed"]
    assert "undo: functions.delete: injected fault" in response.json()["steps"][1]["error"]
    assert agent.records()["functions"][0][3] == "absent"  # tombstoned, not forgotten

    agent.service.reconciler.run()

    assert agent.hardware()["functions"] == []
    assert agent.records()["functions"] == []
