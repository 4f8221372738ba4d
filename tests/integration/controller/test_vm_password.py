"""A VM's new admin password, through the real controller API and a real agent of a vm node (its host the
memory hypervisor driver): set in the running guest now by the node's agent (an operation, `set_password`),
and stored for the metadata service as a bare-metal host's is; the
password in no operation, no answer and no log, and a VM that is not running refused."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from dpustack import secrets
from dpustack.db.models import Instance, Operation
from dpustack.drivers.hypervisor.memory import MemoryDomain

NEW_PASSWORD = "n3w:VM pass phrase!"
CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}]


@pytest.fixture
def vm(cloud) -> MemoryDomain:
    """A vm node dpu-vm-1 and its running VM v1: v1's domain on the node's host."""
    cloud.add_node("dpu-vm-1", vm_cells=CELLS)
    cloud.call("POST", "/v1/flavors", {"name": "vm.small", "vcpus": 1, "ram": 512, "disk": 1, "type": "vm"},
               expect=201)
    assert cloud.act("POST", "/v1/instances", {"name": "v1", "flavor": "vm.small"})["status"] == "succeeded"
    return cloud.drivers("dpu-vm-1").hypervisor.held[cloud.call("GET", "/v1/instances/v1")["id"]]


def _set(cloud, body, ref="v1"):
    return cloud.api.post(f"/v1/instances/{ref}/admin-password", json=body)


def _row(cloud) -> Instance:
    with cloud.context.sessions() as session:
        row = session.scalars(select(Instance).where(Instance.name == "v1")).one()
        session.expunge(row)
        return row


def _operations(cloud) -> list[Operation]:
    with cloud.context.sessions() as session:
        found = list(session.scalars(select(Operation).where(Operation.action == "set_password")))
        for op in found:
            session.expunge(op)
        return found


@pytest.mark.parametrize("cloud", [0], indirect=True)
def test_an_active_vm_gets_its_password_now_through_an_operation_and_the_metadata_keeps_it(cloud, vm, caplog):
    caplog.set_level(logging.DEBUG)
    answer = _set(cloud, {"new_password": NEW_PASSWORD})

    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert (accepted["action"], [step["name"] for step in accepted["steps"]]) == ("set_password", ["set_password"])
    done = cloud.wait(accepted)
    assert done["status"] == "succeeded", done
    (step,) = done["steps"]
    assert (step["detail"]["node"], step["detail"]["user"]) == ("dpu-vm-1", "root")
    assert [(s["name"], s["status"]) for s in step["detail"]["substeps"]] == [("set password of root in VM", "done")]
    server = _row(cloud)
    assert vm.passwords == {"root": NEW_PASSWORD}  # what the guest agent was given
    assert (server.status, server.task_state, server.fault) == ("ACTIVE", None, None)
    assert secrets.decrypt(server.admin_pass_encrypted, key_file=cloud.settings.secret_key_file) == NEW_PASSWORD

    (operation,) = _operations(cloud)
    assert operation.params == {"user": "root"} and NEW_PASSWORD not in str(operation.context)
    for text in (answer.text, str(done), cloud.api.get("/v1/instances/v1").text):
        assert NEW_PASSWORD not in text
    logged = [r.getMessage() for r in caplog.records]
    assert f"admin password of instance {server.id} (v1, project {server.project_id}) replaced; operation " \
           f"{operation.id} sets it in the VM now" in logged
    assert not [message for message in logged if NEW_PASSWORD in message]


@pytest.mark.parametrize("cloud", [0], indirect=True)
def test_a_guest_agent_that_does_not_answer_fails_the_operation_and_leaves_the_vm_as_it_was(cloud, vm):
    vm.agent_answers = False

    done = cloud.act("POST", "/v1/instances/v1/admin-password", {"new_password": NEW_PASSWORD})

    assert done["status"] == "failed"
    assert "Guest agent is not responding: QEMU guest agent is not connected" in done["error"]
    assert done["steps"][0]["detail"]["substeps"][0]["status"] == "failed"
    server = _row(cloud)
    assert (server.status, server.task_state, server.fault) == ("ACTIVE", None, None)
    # stored all the same: the VM takes it from the metadata service at its next boot
    assert secrets.decrypt(server.admin_pass_encrypted, key_file=cloud.settings.secret_key_file) == NEW_PASSWORD
    assert vm.passwords == {}


@pytest.mark.parametrize("cloud", [0], indirect=True)
@pytest.mark.parametrize("status, task_state, message", [
    ("SHUTOFF", None, "instance 'v1' is SHUTOFF: a VM's password is set in its running guest, so it must be ACTIVE"),
    ("ERROR", None, "instance 'v1' is ERROR: a VM's password is set in its running guest, so it must be ACTIVE"),
    ("ACTIVE", "reboot", "instance 'v1' is busy (reboot); try again when it ends"),
])
def test_a_vm_that_is_not_running_or_busy_is_a_409_and_nothing_is_stored(cloud, vm, status, task_state, message):
    before = _row(cloud).admin_pass_encrypted
    with cloud.context.transaction() as session:
        row = session.scalars(select(Instance).where(Instance.name == "v1")).one()
        row.status, row.task_state = status, task_state

    answer = _set(cloud, {"new_password": NEW_PASSWORD})

    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == {"code": "conflict", "message": message, "field": "instance"}
    assert _row(cloud).admin_pass_encrypted == before and _operations(cloud) == [] and vm.passwords == {}


@pytest.mark.parametrize("cloud", [0], indirect=True)
def test_a_bad_password_is_a_400_naming_it_and_reaches_no_node(cloud, vm):
    for body in ({}, {"new_password": ""}, {"new_password": "x" * 256}):
        answer = _set(cloud, body)
        assert answer.status_code == 400 and answer.json()["error"]["field"] == "new_password", answer.text
    assert _operations(cloud) == [] and vm.passwords == {}
