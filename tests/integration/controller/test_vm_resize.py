"""Resize of a VM on its node, through the real controller API and a real agent of a vm node (its host the
memory hypervisor driver): RESIZE, then VERIFY_RESIZE with both flavors' claims counted on the node, then a
confirm that frees the old ones or a revert that gives the VM its old flavor back; the refusals, each a 409
saying why before any operation starts; and a failure on the node leaving the old flavor running."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from typer.testing import CliRunner

from dpustack.cli import context
from dpustack.cli.main import app
from dpustack.client import Client
from dpustack.drivers.hypervisor import DomainState

# two cells of 4 CPUs and 8 GiB: 8 CPUs and 16 GiB on the node
CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}, {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192}]
ONE_BM_NODE = pytest.mark.parametrize("cloud", [1], indirect=True)
FLAVORS = {"vm.small": (2, 1024, 2), "vm.medium": (3, 2048, 3), "vm.wide": (6, 2048, 3),
           "vm.huge": (8, 1024, 2), "vm.thin": (2, 1024, 1), "vm.large": (4, 2048, 3)}


@pytest.fixture
def vm(cloud) -> dict[str, Any]:
    """A vm node dpu-vm-1, the vm flavors, and its running VM v1 of vm.small."""
    cloud.add_node("dpu-vm-1", vm_cells=CELLS)
    for name, (vcpus, ram, disk) in FLAVORS.items():
        cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "type": "vm"},
                   expect=201)
    assert cloud.act("POST", "/v1/instances", {"name": "v1", "flavor": "vm.small"})["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/v1")
    assert (server["status"], server["node"], server["flavor"]) == ("ACTIVE", "dpu-vm-1", "vm.small")
    return server


def _server(cloud) -> dict[str, Any]:
    return cloud.call("GET", "/v1/instances/v1")


def _domain(cloud, server: dict[str, Any]) -> tuple[DomainState, int, int]:
    """The VM's domain on the host: its state, and the vCPUs and MiB of its definition."""
    held = cloud.drivers("dpu-vm-1").hypervisor.held[server["id"]]
    xml = ET.fromstring(held.xml)
    return held.state, int(xml.find("vcpu").text), int(xml.find("memory").text)


def _claimed(cloud) -> tuple[int, int, list[int]]:
    """The node's claimed CPU and MiB, and the CPU room of each of its cells, as `node list` shows them."""
    node = next(n for n in cloud.call("GET", "/v1/nodes") if n["hostname"] == "dpu-vm-1")
    return node["claimed_cpu"], node["claimed_mem"], [cell["free"]["cpus"] for cell in node["numa_cells"]]


def _resize(cloud, flavor: str) -> dict[str, Any]:
    return cloud.act("POST", "/v1/instances/v1/resize", {"flavor": flavor})


@ONE_BM_NODE
def test_a_resized_vm_holds_both_flavors_until_the_confirm_frees_the_old_one(cloud, vm):
    assert _claimed(cloud) == (2, 1024, [2, 4])

    resized = _resize(cloud, "vm.medium")

    assert resized["status"] == "succeeded", resized
    assert [step["name"] for step in resized["steps"]] == ["resize_on_node", "verify_resize"]
    assert [s["name"] for s in resized["steps"][0]["detail"]["substeps"]] == [
        "power off VM", "define VM with flavor vm.medium", "record flavor", "power on VM"]
    server = _server(cloud)
    assert (server["status"], server["flavor"], server["vcpus"], server["ram"]) == ("VERIFY_RESIZE", "vm.medium",
                                                                                     3, 2048)
    assert {k: server["old_flavor"][k] for k in ("name", "vcpus", "ram")} == {"name": "vm.small", "vcpus": 2,
                                                                               "ram": 1024}
    assert [c["host_cell"] for c in server["numa_placement"]["cells"]] == [1]  # cell 0 still holds the old one
    assert _domain(cloud, vm) == (DomainState.RUNNING, 3, 2048)
    assert _claimed(cloud) == (5, 3072, [2, 1])  # both flavors count
    cloud.report("dpu-vm-1")
    assert _server(cloud)["status"] == "VERIFY_RESIZE"  # a report does not end the wait
    stop = cloud.api.post("/v1/instances/v1/stop")
    assert stop.status_code == 409 and "confirm or revert its resize first" in stop.json()["error"]["message"]

    confirmed = cloud.api.post("/v1/instances/v1/resize-confirm")

    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["old_flavor"]) == ("ACTIVE", None)
    assert _claimed(cloud) == (3, 2048, [4, 1])
    assert _domain(cloud, vm) == (DomainState.RUNNING, 3, 2048)
    again = cloud.api.post("/v1/instances/v1/resize-confirm")
    assert again.status_code == 409 and again.json()["error"] == {
        "code": "conflict", "field": "instance",
        "message": "cannot confirm the resize of instance 'v1' in status ACTIVE: it has no resize waiting for a "
                   "confirm or revert"}
    cloud.restart_agent("dpu-vm-1")  # the agent's record has the new flavor
    node_view = cloud.router.agents["dpu-vm-1"].get(f"/v1/instances/{vm['id']}").json()
    assert (node_view["vcpus"], node_view["ram"]) == (3, 2048)


@ONE_BM_NODE
def test_a_revert_gives_the_vm_its_old_flavor_and_frees_the_new_claim(cloud, vm):
    _resize(cloud, "vm.medium")

    reverted = cloud.act("POST", "/v1/instances/v1/resize-revert")

    assert reverted["status"] == "succeeded", reverted
    assert [step["name"] for step in reverted["steps"]] == ["revert_on_node", "finish_revert"]
    server = _server(cloud)
    assert (server["status"], server["flavor"], server["vcpus"], server["ram"], server["old_flavor"]) == (
        "ACTIVE", "vm.small", 2, 1024, None)
    assert server["numa_placement"] == vm["numa_placement"]
    assert _domain(cloud, vm) == (DomainState.RUNNING, 2, 1024)
    assert _claimed(cloud) == (2, 1024, [2, 4])
    history = cloud.call("GET", f"/v1/operations?instance={vm['id']}")
    assert [o["action"] for o in history][::-1] == ["create", "resize", "resize_revert"]


@ONE_BM_NODE
def test_a_stopped_vm_is_resized_off_and_is_shutoff_again_after_the_confirm(cloud, vm):
    cloud.act("POST", "/v1/instances/v1/stop")

    assert _resize(cloud, "vm.medium")["status"] == "succeeded"

    assert _server(cloud)["status"] == "VERIFY_RESIZE"
    assert _domain(cloud, vm) == (DomainState.OFF, 3, 2048)
    assert cloud.api.post("/v1/instances/v1/resize-confirm").json()["status"] == "SHUTOFF"


@ONE_BM_NODE
def test_deleting_a_vm_waiting_for_its_confirm_frees_both_flavors(cloud, vm):
    _resize(cloud, "vm.medium")

    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"

    assert _claimed(cloud) == (0, 0, [4, 4])


@ONE_BM_NODE
def test_while_it_waits_for_its_confirm_the_old_flavors_room_is_not_given_to_a_new_vm(cloud, vm):
    _resize(cloud, "vm.medium")  # cell 0: 2 CPUs left beside the old flavor; cell 1: 1 beside the new

    created = cloud.act("POST", "/v1/instances", {"name": "v2", "flavor": "vm.medium"})

    assert created["status"] == "failed" and "no valid node" in created["error"], created
    cloud.api.post("/v1/instances/v1/resize-confirm")
    assert cloud.act("POST", "/v1/instances", {"name": "v3", "flavor": "vm.medium"})["status"] == "succeeded"


@ONE_BM_NODE
def test_a_flavor_that_does_not_fit_on_the_node_is_refused_with_the_reason(cloud, vm):
    numa = cloud.api.post("/v1/instances/v1/resize", json={"flavor": "vm.wide"})

    assert numa.status_code == 409, numa.text
    error = numa.json()["error"]
    assert error["field"] == "flavor"
    assert error["message"].startswith("flavor 'vm.wide' does not fit on node dpu-vm-1, where 'v1' runs: its NUMA "
                                       "cells cannot hold it beside the VM's current placement")
    assert ("needs 6 shared CPUs and 2048 MiB in one cell; cell 0 has 2 CPUs and 7168 MiB free, cell 1 has 4 CPUs "
            "and 8192 MiB free") in error["message"]
    assert error["message"].endswith("to move it to another node with that flavor, migrate it "
                                     "(POST /v1/instances/{ref}/migrate)")

    cpu = cloud.api.post("/v1/instances/v1/resize", json={"flavor": "vm.huge"})

    assert cpu.status_code == 409, cpu.text
    assert ("it needs 8 CPU / 1024 MiB beside the 2 CPU / 1024 MiB the VM holds until its resize is confirmed, "
            "and the node has 6 CPU / 15360 MiB free") in cpu.json()["error"]["message"]
    server = _server(cloud)
    assert (server["status"], server["task_state"], server["flavor"], server["old_flavor"]) == (
        "ACTIVE", None, "vm.small", None)
    assert _claimed(cloud) == (2, 1024, [2, 4])
    assert [o["action"] for o in cloud.call("GET", f"/v1/operations?instance={vm['id']}")] == ["create"]


@ONE_BM_NODE
def test_what_cannot_be_resized_confirmed_or_reverted_is_refused_before_any_operation(cloud, vm):
    cloud.setup_basics()  # bm.small
    cases = [
        ({"flavor": "vm.small"}, 409, "flavor", "instance 'v1' has flavor 'vm.small' already"),
        ({"flavor": "bm.small"}, 409, "flavor", "flavor 'bm.small' is a bm flavor: a VM is resized to a vm flavor"),
        ({"flavor": "vm.thin"}, 409, "flavor", "flavor 'vm.thin' has a smaller disk (1 GiB) than 'vm.small' "
                                               "(2 GiB): a boot volume is not shrunk"),
        ({"flavor": "vm.nope"}, 404, "flavor", "flavor 'vm.nope' not found"),
    ]
    for body, status, field, message in cases:
        answer = cloud.api.post("/v1/instances/v1/resize", json=body)

        assert (answer.status_code, answer.json()["error"]["field"]) == (status, field), answer.text
        assert answer.json()["error"]["message"] == message
    missing = cloud.api.post("/v1/instances/v1/resize", json={})
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "flavor", missing.text
    for action in ("resize-confirm", "resize-revert"):
        answer = cloud.api.post(f"/v1/instances/v1/{action}")
        assert answer.status_code == 409 and "in status ACTIVE: it has no resize waiting" in answer.text, action
    cloud.act("POST", "/v1/instances/v1/pause")
    paused = cloud.api.post("/v1/instances/v1/resize", json={"flavor": "vm.medium"})
    assert paused.status_code == 409
    assert paused.json()["error"]["message"] == ("cannot resize instance 'v1' in status PAUSED: unpause it "
                                                 "first")
    assert [o["action"] for o in cloud.call("GET", f"/v1/operations?instance={vm['id']}")] == ["pause", "create"]

    cloud.build("web1", node="dpu-bm-1")
    for action, body in (("resize", {"flavor": "bm.small"}), ("resize-confirm", None), ("resize-revert", None)):
        answer = cloud.api.post(f"/v1/instances/web1/{action}", json=body)

        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == {
            "code": "conflict", "field": "instance",
            "message": "bare-metal instances cannot be resized: 'web1' is one (its host is fixed: its flavor is "
                       "the host's; only a VM can)"}


@ONE_BM_NODE
def test_a_vm_that_cannot_start_with_the_new_flavor_runs_its_old_one_and_the_new_claim_is_freed(cloud, vm):
    cloud.drivers("dpu-vm-1").hypervisor.faults.arm("start")  # once: the old definition starts again

    failed = _resize(cloud, "vm.medium")

    assert failed["status"] == "failed" and "hypervisor.start: injected fault" in failed["error"], failed
    substeps = {s["name"]: s["status"] for s in failed["steps"][0]["detail"]["substeps"]}
    assert substeps == {"power off VM": "undone", "define VM with flavor vm.medium": "undone",
                        "record flavor": "undone", "power on VM": "failed"}
    server = _server(cloud)
    assert (server["status"], server["flavor"], server["vcpus"], server["old_flavor"], server["fault"]) == (
        "ACTIVE", "vm.small", 2, None, None)
    assert _domain(cloud, vm) == (DomainState.RUNNING, 2, 1024)
    assert _claimed(cloud) == (2, 1024, [2, 4])
    assert _resize(cloud, "vm.medium")["status"] == "succeeded"  # the fault is gone: it can be tried again


@ONE_BM_NODE
def test_a_revert_the_host_refuses_leaves_the_vm_waiting_with_its_new_flavor(cloud, vm):
    _resize(cloud, "vm.medium")
    cloud.drivers("dpu-vm-1").hypervisor.faults.arm("redefine")

    failed = cloud.act("POST", "/v1/instances/v1/resize-revert")

    assert failed["status"] == "failed" and "hypervisor.redefine: injected fault" in failed["error"], failed
    server = _server(cloud)
    assert (server["status"], server["flavor"], server["old_flavor"]["name"]) == ("VERIFY_RESIZE", "vm.medium",
                                                                                 "vm.small")
    assert _domain(cloud, vm) == (DomainState.RUNNING, 3, 2048)
    assert _claimed(cloud) == (5, 3072, [2, 1])
    assert cloud.act("POST", "/v1/instances/v1/resize-revert")["status"] == "succeeded"
    assert _domain(cloud, vm) == (DomainState.RUNNING, 2, 1024)


@ONE_BM_NODE
def test_the_cli_resizes_shows_both_flavors_confirms_and_reverts(cloud, vm, monkeypatch):
    monkeypatch.setattr(context, "make_client",
                        lambda url, token: Client(url, token, transport=cloud.api._transport))

    def dpustack(*args: str):
        return CliRunner().invoke(app, list(args), env={"DPUSTACK_URL": "http://testserver", "COLUMNS": "200",
                                                        "DPUSTACK_TOKEN": cloud.admin_token})

    resized = dpustack("server", "resize", "v1", "vm.medium", "--wait")

    assert resized.exit_code == 0, resized.output
    assert "resize v1 vm.medium: server v1 is VERIFY_RESIZE on dpu-vm-1" in resized.stdout
    shown = dpustack("server", "show", "v1").stdout
    assert "vm.medium (3 vCPU, 2048 MiB)" in shown
    assert "vm.small (2 vCPU, 1024 MiB; held until resize-confirm or resize-revert)" in shown
    confirmed = dpustack("server", "resize-confirm", "v1", "--wait")
    assert confirmed.exit_code == 0, confirmed.output
    assert "resize-confirm v1: server v1 is ACTIVE with flavor vm.medium" in confirmed.stdout
    assert "held until" not in dpustack("server", "show", "v1").stdout

    refused = dpustack("server", "resize", "v1", "vm.wide", "--wait")
    assert refused.exit_code == 1
    assert "error: flavor 'vm.wide' does not fit on node dpu-vm-1, where 'v1' runs" in refused.stderr
    assert "(field: flavor)" in refused.stderr

    assert dpustack("server", "resize", "v1", "vm.large", "--wait").exit_code == 0
    reverted = dpustack("server", "resize-revert", "v1", "--wait")
    assert reverted.exit_code == 0, reverted.output
    assert "resize-revert v1: server v1 is ACTIVE on dpu-vm-1" in reverted.stdout
    assert "vm.medium (3 vCPU, 2048 MiB)" in dpustack("server", "show", "v1").stdout
    assert _domain(cloud, vm) == (DomainState.RUNNING, 3, 2048)
