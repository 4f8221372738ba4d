"""Cold migration through the real controller API, with real agents of both node types (memory drivers): a VM
to another vm node, a bare-metal instance to a VM and a VM to bare metal. Each ends on the target with the same
ports (ids, MACs, addresses) and volumes, nothing left on the source, the source's claims held until the
confirm; a revert brings it back; what cannot move is a 409 saying why."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from typer.testing import CliRunner

from dpustack.cli import context
from dpustack.cli.main import app
from dpustack.client import Client
from dpustack.db.models import Port
from dpustack.drivers.hypervisor import DomainState
from faults import assert_clean
from moves import BM1, BM2, VM1, VM2, build_with_data, claims, nics, server

def migrate(cloud, name: str, **body: Any) -> dict[str, Any]:
    return cloud.act("POST", f"/v1/instances/{name}/migrate", body)


def test_a_vm_moves_to_another_vm_node_with_its_ports_and_volumes(mixed_cloud):
    cloud = mixed_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")

    op = migrate(cloud, "v1", node=VM2)

    assert op["status"] == "succeeded", op
    assert [s["name"] for s in op["steps"]] == ["claim_target", "stop_on_source", "build_on_target",
                                                "bind_ports_on_target", "clean_up_source", "finish_migrate"]
    after = server(cloud, "v1")
    assert (after["status"], after["node"], after["source_node"]) == ("VERIFY_MIGRATE", VM2, VM1)
    assert nics(cloud, "v1") == ports and after["volumes"] == before["volumes"]
    assert cloud.drivers(VM2).hypervisor.state(after["id"]) == DomainState.RUNNING
    assert_clean(cloud, VM1)
    finish = op["steps"][-1]["detail"]
    assert finish["duration_ms"] >= finish["downtime_ms"] >= 0
    assert claims(cloud, VM1) == (2, 1024, 1) and claims(cloud, VM2) == (2, 1024, 1)
    assert _cells_free(cloud, VM1) == [2, 4] and _cells_free(cloud, VM2) == [2, 4]  # both placements held
    removal = cloud.api.delete(f"/v1/nodes/{VM1}")
    assert removal.status_code == 409 and "wait for migrate-confirm or migrate-revert" in removal.text
    cloud.report()
    assert server(cloud, "v1")["status"] == "VERIFY_MIGRATE"  # the nodes' reports do not end the wait

    confirmed = cloud.call("POST", "/v1/instances/v1/migrate-confirm")
    assert (confirmed["status"], confirmed["source_node"], confirmed["old_flavor"]) == ("ACTIVE", None, None)
    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (2, 1024, 1)
    assert _cells_free(cloud, VM1) == [4, 4] and _cells_free(cloud, VM2) == [2, 4]


def _cells_free(cloud, hostname: str) -> list[int]:
    """The CPU room of each of the node's cells, as `node show` shows it."""
    return [cell["free"]["cpus"] for cell in cloud.call("GET", f"/v1/nodes/{hostname}")["numa_cells"]]


def test_a_revert_brings_the_vm_back_to_its_source_and_frees_the_target(mixed_cloud):
    cloud = mixed_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")
    assert migrate(cloud, "v1")["status"] == "succeeded"  # the scheduler's choice: the other vm node
    assert server(cloud, "v1")["node"] == VM2

    op = cloud.act("POST", "/v1/instances/v1/migrate-revert")

    assert op["status"] == "succeeded", op
    assert [s["name"] for s in op["steps"]] == ["stop_on_target", "build_on_source", "bind_ports_on_source",
                                                "clean_up_target", "finish_revert"]
    after = server(cloud, "v1")
    assert (after["status"], after["node"], after["source_node"], after["flavor"]) == ("ACTIVE", VM1, None,
                                                                                       "vm.small")
    assert nics(cloud, "v1") == ports and after["volumes"] == before["volumes"]
    assert after["numa_placement"] == before["numa_placement"]
    assert cloud.drivers(VM1).hypervisor.state(after["id"]) == DomainState.RUNNING
    assert_clean(cloud, VM2)
    assert claims(cloud, VM1) == (2, 1024, 1) and claims(cloud, VM2) == (0, 0, 0)
    assert {a["node"] for v in after["volumes"] for a in cloud.call("GET", f"/v1/volumes/{v}")["attachments"]} \
        == {VM1}
    assert len(cloud.volume_backend.exports) == 2  # one export per volume: the source's


def test_a_bare_metal_instance_moves_to_a_vm_with_a_vm_flavor_and_back_to_bare_metal(mixed_cloud):
    cloud = mixed_cloud
    before = build_with_data(cloud, "b1", "bm.small", BM1)
    ports = nics(cloud, "b1")

    op = migrate(cloud, "b1", flavor="vm.big")

    assert op["status"] == "succeeded", op
    moved = server(cloud, "b1")
    assert (moved["status"], moved["node"], moved["flavor"], moved["vcpus"], moved["ram"]) == (
        "VERIFY_MIGRATE", moved["node"], "vm.big", 2, 2048)
    assert moved["node"] in (VM1, VM2) and moved["numa_placement"] is not None
    assert moved["old_flavor"]["name"] == "bm.small"
    assert nics(cloud, "b1") == ports and moved["volumes"] == before["volumes"]
    assert all(d["bdf"] for d in moved["disks"]) and all(n["bdf"] for n in moved["nics"])
    assert cloud.drivers(moved["node"]).hypervisor.state(moved["id"]) == DomainState.RUNNING
    assert_clean(cloud, BM1)
    assert cloud.drivers(BM1).bmc.power_state() == "off"
    assert claims(cloud, BM1) == (8, 16384, 1)
    assert cloud.call("POST", "/v1/instances/b1/migrate-confirm")["status"] == "ACTIVE"
    assert claims(cloud, BM1) == (0, 0, 0)

    back = migrate(cloud, "b1", flavor="bm.small", node=BM2)

    assert back["status"] == "succeeded", back
    host = server(cloud, "b1")
    assert (host["status"], host["node"], host["flavor"], host["numa_placement"]) == ("VERIFY_MIGRATE", BM2,
                                                                                      "bm.small", None)
    assert nics(cloud, "b1") == ports and host["volumes"] == before["volumes"]
    assert cloud.drivers(BM2).bmc.power_state() == "on"
    assert_clean(cloud, moved["node"])
    assert cloud.call("POST", "/v1/instances/b1/migrate-confirm")["status"] == "ACTIVE"
    assert claims(cloud, moved["node"]) == (0, 0, 0) and claims(cloud, BM2) == (8, 16384, 1)


def test_a_vm_moves_to_bare_metal_and_a_revert_makes_it_a_vm_again(mixed_cloud):
    cloud = mixed_cloud
    before = build_with_data(cloud, "v1", "vm.small", VM1)
    ports = nics(cloud, "v1")

    assert migrate(cloud, "v1", flavor="bm.small")["status"] == "succeeded"
    host = server(cloud, "v1")
    assert (host["status"], host["node"] in (BM1, BM2), host["flavor"]) == ("VERIFY_MIGRATE", True, "bm.small")
    assert nics(cloud, "v1") == ports
    assert_clean(cloud, VM1)

    assert cloud.act("POST", "/v1/instances/v1/migrate-revert")["status"] == "succeeded"
    vm = server(cloud, "v1")
    assert (vm["status"], vm["node"], vm["flavor"], vm["numa_placement"]) == ("ACTIVE", VM1, "vm.small",
                                                                              before["numa_placement"])
    assert nics(cloud, "v1") == ports and vm["volumes"] == before["volumes"]
    assert_clean(cloud, host["node"])
    assert claims(cloud, host["node"]) == (0, 0, 0) and claims(cloud, VM1) == (2, 1024, 1)


def test_a_stopped_vm_moves_stopped_and_has_no_downtime(mixed_cloud):
    cloud = mixed_cloud
    build_with_data(cloud, "v1", "vm.small", VM1)
    assert cloud.act("POST", "/v1/instances/v1/stop")["status"] == "succeeded"

    op = migrate(cloud, "v1", node=VM2)

    assert op["status"] == "succeeded", op
    assert op["steps"][-1]["detail"]["downtime_ms"] is None
    vm = server(cloud, "v1")
    assert cloud.drivers(VM2).hypervisor.state(vm["id"]) != DomainState.RUNNING
    assert cloud.call("POST", "/v1/instances/v1/migrate-confirm")["status"] == "SHUTOFF"


def test_deleting_a_vm_waiting_for_its_confirm_frees_both_nodes(mixed_cloud):
    cloud = mixed_cloud
    build_with_data(cloud, "v1", "vm.small", VM1)
    assert migrate(cloud, "v1", node=VM2)["status"] == "succeeded"

    assert cloud.act("DELETE", "/v1/instances/v1")["status"] == "succeeded"

    assert claims(cloud, VM1) == (0, 0, 0) and claims(cloud, VM2) == (0, 0, 0)
    assert_clean(cloud, VM1)
    assert_clean(cloud, VM2)
    assert cloud.call("GET", "/v1/volumes/data1")["status"] == "available"
    assert cloud.volume_backend.exports == {}


def _refusal(cloud, name: str, body: dict[str, Any], status: int = 409) -> dict[str, Any]:
    answer = cloud.api.post(f"/v1/instances/{name}/migrate", json=body)
    assert answer.status_code == status, answer.text
    return answer.json()["error"]


def test_what_cannot_move_is_refused_saying_why_before_anything_changes(mixed_cloud):
    cloud = mixed_cloud
    build_with_data(cloud, "v1", "vm.small", VM1)
    assert cloud.build("b1", flavor="bm.small", node=BM1)["status"] == "succeeded"

    assert _refusal(cloud, "b1", {"live": True}) == {
        "code": "conflict", "field": "instance",
        "message": "instance 'b1' is a bare-metal host: its memory cannot move live; migrate it cold (to a VM "
                   "with a vm flavor)"}
    own = _refusal(cloud, "v1", {"node": VM1})
    assert own["field"] == "node" and "runs on node dpu-vm-1 already" in own["message"]
    other_type = _refusal(cloud, "v1", {"node": BM2})
    assert other_type["field"] == "node" and "needs a bm flavor" in other_type["message"]
    mismatch = _refusal(cloud, "v1", {"node": BM2, "flavor": "vm.big"})
    assert mismatch["field"] == "node" and "'vm.big' is a vm flavor" in mismatch["message"]
    small = _refusal(cloud, "b1", {"flavor": "vm.small"})
    assert small == {"code": "conflict", "field": "flavor",
                     "message": "flavor 'vm.small' has a smaller disk (1 GiB) than the boot volume of 'b1' "
                                "(40 GiB): a volume is not shrunk"}
    full = _refusal(cloud, "v1", {"flavor": "bm.small", "node": BM1})  # b1 has the host
    assert full["field"] == "node" and "cannot migrate 'v1' to node dpu-bm-1" in full["message"]
    assert "not enough free CPU, RAM or already in use" in full["message"]
    assert _refusal(cloud, "v1", {"node": "nope"}, 404)["field"] == "node"
    assert _refusal(cloud, "v1", {"flavor": "nope"}, 404)["field"] == "flavor"
    assert _refusal(cloud, "v1", {"nodes": VM2}, 400)["field"] == "nodes"
    assert cloud.act("POST", "/v1/instances/v1/pause")["status"] == "succeeded"
    paused = _refusal(cloud, "v1", {})
    assert paused["field"] == "instance" and paused["message"].endswith("unpause it first")
    assert cloud.act("POST", "/v1/instances/v1/unpause")["status"] == "succeeded"
    for action in ("migrate-confirm", "migrate-revert"):
        answer = cloud.api.post(f"/v1/instances/v1/{action}")
        assert answer.status_code == 409 and answer.json()["error"]["message"].endswith(
            "in status ACTIVE: it has no migration waiting for a confirm or revert"), answer.text
    assert server(cloud, "v1")["node"] == VM1 and claims(cloud, VM2) == (0, 0, 0)
    assert cloud.call("GET", "/v1/operations?instance=" + server(cloud, "v1")["id"])[0]["action"] == "unpause"


def test_a_remote_managed_nic_cannot_move(mixed_cloud):
    cloud = mixed_cloud
    assert cloud.build("v1", flavor="vm.small", node=VM1)["status"] == "succeeded"
    with cloud.context.transaction() as session:
        port = session.scalars(select(Port)).one()
        port.vnic_type = "remote-managed"  # as a remote-managed NIC given at create time (test_vm_pci)
    error = _refusal(cloud, "v1", {})
    assert error["field"] == "instance" and "is a remote-managed NIC" in error["message"]


def test_the_cli_migrates_shows_the_source_confirms_reverts_and_shows_each_step(mixed_cloud, monkeypatch):
    cloud = mixed_cloud
    monkeypatch.setattr(context, "make_client", lambda url, token: Client(url, token, transport=cloud.api._transport))

    def dpustack(*args: str):
        return CliRunner().invoke(app, list(args), env={"DPUSTACK_URL": "http://testserver", "COLUMNS": "200",
                                                        "DPUSTACK_TOKEN": cloud.admin_token})

    build_with_data(cloud, "v1", "vm.small", VM1)

    moved = dpustack("server", "migrate", "v1", "--node", VM2, "--wait")

    assert moved.exit_code == 0, moved.output
    assert "migrate v1 to dpu-vm-2: server v1 is VERIFY_MIGRATE on dpu-vm-2" in moved.stdout
    shown = dpustack("server", "show", "v1").stdout
    assert "dpu-vm-1 (held until migrate-confirm or migrate-revert)" in shown
    assert "vm.small (2 vCPU, 1024 MiB; held until migrate-confirm or migrate-revert)" in shown
    operation = cloud.call("GET", f"/v1/operations?instance={server(cloud, 'v1')['id']}")[0]
    steps = dpustack("operation", "show", operation["id"]).stdout
    for name in ("claim_target", "stop_on_source", "build_on_target", "bind_ports_on_target", "clean_up_source",
                 "finish_migrate", "power off VM", "define VM"):
        assert name in steps, steps
    assert "dpu-vm-1 -> dpu-vm-2: took " in steps and "ms, downtime " in steps
    reverted = dpustack("server", "migrate-revert", "v1", "--wait")
    assert reverted.exit_code == 0, reverted.output
    assert "migrate-revert v1: server v1 is ACTIVE on dpu-vm-1" in reverted.stdout

    assert dpustack("server", "migrate", "v1", "--wait").exit_code == 0
    confirmed = dpustack("server", "migrate-confirm", "v1")
    assert confirmed.exit_code == 0, confirmed.output
    assert "migrate-confirm v1: server v1 is ACTIVE on dpu-vm-2" in confirmed.stdout
    assert "held until" not in dpustack("server", "show", "v1").stdout

    refused = dpustack("server", "migrate", "v1", "--live", "--flavor", "vm.big", "--wait")
    assert refused.exit_code == 1 and "a live migration keeps the flavor of 'v1'" in refused.stderr
    assert "(field: flavor)" in refused.stderr
    failed_op = cloud.drivers(VM1).hypervisor.faults
    failed_op.arm("define")
    failed = dpustack("server", "migrate", "v1", "--node", VM1, "--wait")
    assert failed.exit_code != 0 and "injected fault" in failed.output
    op = cloud.call("GET", f"/v1/operations?instance={server(cloud, 'v1')['id']}")[0]
    steps = dpustack("operation", "show", op["id"]).stdout
    assert "undone" in steps and "failed" in steps
