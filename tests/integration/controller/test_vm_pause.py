"""Pause and unpause of a VM, through the real controller API and a real agent of a vm node (its host the
memory hypervisor driver): PAUSED while the domain is paused, through node reports and an agent restart,
ACTIVE again once unpaused; what a PAUSED instance may do; bare metal refused before any operation."""

from __future__ import annotations

from typing import Any

import pytest

from dpustack.drivers.hypervisor import DomainState

CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}]
ONE_BM_NODE = pytest.mark.parametrize("cloud", [1], indirect=True)


@pytest.fixture
def vm(cloud) -> dict[str, Any]:
    """A vm node dpu-vm-1 and its running VM v1."""
    cloud.add_node("dpu-vm-1", vm_cells=CELLS)
    cloud.call("POST", "/v1/flavors", {"name": "vm.small", "vcpus": 2, "ram": 1024, "disk": 1, "type": "vm"},
               expect=201)
    assert cloud.act("POST", "/v1/instances", {"name": "v1", "flavor": "vm.small"})["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/v1")
    assert (server["status"], server["node"]) == ("ACTIVE", "dpu-vm-1")
    return server


def _state(cloud, server: dict[str, Any]) -> DomainState:
    return cloud.drivers("dpu-vm-1").hypervisor.state(server["id"])


def _status(cloud) -> str:
    return cloud.call("GET", "/v1/instances/v1")["status"]


@ONE_BM_NODE
def test_a_vm_is_paused_and_unpaused_and_stays_paused_through_reports_and_an_agent_restart(cloud, vm):
    paused = cloud.act("POST", "/v1/instances/v1/pause")

    assert paused["status"] == "succeeded", paused
    assert [step["name"] for step in paused["steps"]] == ["pause"]
    assert paused["steps"][0]["detail"]["substeps"][0]["name"] == "pause VM"
    assert (_status(cloud), _state(cloud, vm)) == ("PAUSED", DomainState.PAUSED)

    cloud.report("dpu-vm-1")  # its power is on: neither ACTIVE nor SHUTOFF is taken from the report
    assert _status(cloud) == "PAUSED"
    assert cloud.call("GET", "/v1/nodes/dpu-vm-1")["instances"] == [{"uuid": vm["id"], "status": "paused"}]
    cloud.restart_agent("dpu-vm-1")
    assert (_status(cloud), _state(cloud, vm)) == ("PAUSED", DomainState.PAUSED)
    assert cloud.act("POST", "/v1/instances/v1/pause")["status"] == "succeeded"  # again: nothing changes
    assert _status(cloud) == "PAUSED"

    unpaused = cloud.act("POST", "/v1/instances/v1/unpause")

    assert unpaused["status"] == "succeeded", unpaused
    assert (_status(cloud), _state(cloud, vm)) == ("ACTIVE", DomainState.RUNNING)
    assert cloud.drivers("dpu-vm-1").hypervisor.held[vm["id"]].boots == 1  # the same guest ran on
    assert cloud.act("POST", "/v1/instances/v1/unpause")["status"] == "succeeded"
    cloud.report("dpu-vm-1")
    assert _status(cloud) == "ACTIVE"
    history = cloud.call("GET", f"/v1/operations?instance={vm['id']}")
    assert [o["action"] for o in history][::-1] == ["create", "pause", "pause", "unpause", "unpause"]


@ONE_BM_NODE
def test_a_paused_vm_must_be_unpaused_to_start_reboot_or_change_devices(cloud, vm):
    cloud.setup_basics()  # net1
    cloud.volume("data1", size=1)
    cloud.act("POST", "/v1/instances/v1/pause")

    for path, body in (("start", None), ("reboot", {"type": "hard"}), ("nics", {"network": "net1"}),
                       ("volumes", {"volume": "data1"})):
        answer = cloud.api.post(f"/v1/instances/v1/{path}", json=body)

        assert answer.status_code == 409, (path, answer.text)
        assert answer.json()["error"]["field"] == "instance"
        assert "in status PAUSED: unpause it first" in answer.json()["error"]["message"]
    assert (_status(cloud), _state(cloud, vm)) == ("PAUSED", DomainState.PAUSED)


@ONE_BM_NODE
def test_a_paused_vm_is_stopped_for_real_and_deleted(cloud, vm):
    cloud.act("POST", "/v1/instances/v1/pause")

    stopped = cloud.act("POST", "/v1/instances/v1/stop")

    assert stopped["status"] == "succeeded", stopped
    assert (_status(cloud), _state(cloud, vm)) == ("SHUTOFF", DomainState.OFF)
    answer = cloud.api.post("/v1/instances/v1/pause")
    assert answer.status_code == 409 and "in status SHUTOFF" in answer.json()["error"]["message"]
    cloud.act("POST", "/v1/instances/v1/start")
    cloud.act("POST", "/v1/instances/v1/pause")
    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"
    assert _state(cloud, vm) == DomainState.MISSING


@ONE_BM_NODE
def test_a_bare_metal_instance_cannot_be_paused_and_no_operation_starts(cloud):
    cloud.setup_basics()
    cloud.build("web1", node="dpu-bm-1")
    server = cloud.call("GET", "/v1/instances/web1")

    for action in ("pause", "unpause"):
        answer = cloud.api.post(f"/v1/instances/web1/{action}")

        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == {
            "code": "conflict", "field": "instance",
            "message": "bare-metal instances cannot be paused or unpaused: 'web1' is one (only a VM can; stop "
                       "it instead)"}
    assert [o["action"] for o in cloud.call("GET", f"/v1/operations?instance={server['id']}")] == ["create"]
    assert cloud.call("GET", "/v1/instances/web1")["status"] == "ACTIVE"
    assert cloud.drivers("dpu-bm-1").bmc.power_state() == "on"
