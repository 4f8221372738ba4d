"""Instance statuses and the rules that move an instance between them, as both sides use them."""

import json
from typing import get_args

import pytest

from dpustack.instance_states import (ALLOWED_FROM, MOVING, STATUS_AFTER, STATUS_BY_POWER, STATUS_BY_REPORT,
                                      STATUS_DURING, VM_ONLY, WITH_CONSOLE, AgentStatus, InstanceStatus,
                                      observed_status, reported_status)


def test_statuses_are_the_strings_the_api_and_the_databases_hold():
    assert [status.value for status in InstanceStatus] == [
        "BUILDING", "ACTIVE", "SHUTOFF", "REBOOTING", "PAUSED", "RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE",
        "MIGRATING", "VERIFY_MIGRATE", "REVERT_MIGRATE", "DELETING", "DELETED", "ERROR"]
    assert json.dumps({"status": InstanceStatus.SHUTOFF}) == '{"status": "SHUTOFF"}'
    assert f"in status {InstanceStatus.ERROR}" == "in status ERROR"
    assert "ACTIVE" in ALLOWED_FROM["add_nic"]  # a status read back from a database is a plain string


@pytest.mark.parametrize("power, fault, status", [
    ("on", None, "ACTIVE"), ("off", None, "SHUTOFF"), ("on", "port p waits for function f", "ERROR"),
])
def test_a_node_shows_an_instance_by_its_power_unless_it_has_a_fault(power, fault, status):
    assert observed_status(power, fault) == status


@pytest.mark.parametrize("power, fault, status", [
    ("on", None, "PAUSED"), ("off", None, "SHUTOFF"), ("on", "function f is gone", "ERROR"),
])
def test_a_paused_vm_is_paused_while_on_and_without_a_fault(power, fault, status):
    assert observed_status(power, fault, paused=True) == status


def test_the_controller_shows_what_the_node_reports_of_an_idle_instance():
    for power, status in STATUS_BY_POWER.items():
        assert STATUS_BY_REPORT[reported_status(status, power)] == status
    assert reported_status(InstanceStatus.ERROR, "on") == "error"
    assert "error" not in STATUS_BY_REPORT  # an instance in ERROR keeps its fault until an action clears it


def test_a_paused_vm_is_reported_paused_and_the_controller_keeps_it_paused():
    # its power is on, yet neither ACTIVE (up) nor SHUTOFF (down) is taken from the report
    assert reported_status(InstanceStatus.PAUSED, "on") == "paused"
    assert STATUS_BY_REPORT["paused"] == InstanceStatus.PAUSED


def test_an_agent_can_answer_every_status_it_gives_an_instance():
    assert set(get_args(AgentStatus)) == {*STATUS_BY_POWER.values(), InstanceStatus.PAUSED, InstanceStatus.ERROR}


def test_an_instance_in_error_can_be_powered_and_lose_devices_but_not_gain_them():
    may = {action for action, allowed in ALLOWED_FROM.items() if InstanceStatus.ERROR in allowed}

    assert may == {"stop", "start", "reboot", "remove_nic", "remove_volume"}
    assert all({"ACTIVE", "SHUTOFF"} <= set(allowed) for action, allowed in ALLOWED_FROM.items()
               if action not in VM_ONLY and action not in ("set_password", "migrate_confirm", "migrate_revert",
                                                           "live_migrate"))
    assert all(len(status) <= 16 for status in InstanceStatus)  # the databases' column


def test_a_live_migration_starts_from_a_running_vm_and_ends_active_without_a_confirm():
    assert ALLOWED_FROM["live_migrate"] == ("ACTIVE",)
    assert (STATUS_DURING["live_migrate"], STATUS_AFTER["live_migrate"]) == ("MIGRATING", "ACTIVE")


def test_a_vms_password_is_set_only_in_a_running_guest():
    assert ALLOWED_FROM["set_password"] == ("ACTIVE",)
    assert "set_password" not in STATUS_DURING and "set_password" not in STATUS_AFTER  # the status stays


def test_pause_and_unpause_go_between_active_and_paused_and_again_is_nothing():
    assert (ALLOWED_FROM["pause"], STATUS_AFTER["pause"]) == (("ACTIVE", "PAUSED"), "PAUSED")
    assert (ALLOWED_FROM["unpause"], STATUS_AFTER["unpause"]) == (("PAUSED", "ACTIVE"), "ACTIVE")
    assert {"pause", "unpause"} <= set(VM_ONLY)
    assert "pause" not in STATUS_DURING and "unpause" not in STATUS_DURING


def test_a_paused_instance_may_be_stopped_deleted_or_unpaused_and_nothing_else():
    may = {action for action, allowed in ALLOWED_FROM.items() if InstanceStatus.PAUSED in allowed}

    assert may == {"stop", "pause", "unpause"}  # delete: from any status; start, reboot, devices: unpause first
    assert "delete" not in ALLOWED_FROM and InstanceStatus.PAUSED in WITH_CONSOLE


def test_power_actions_end_in_the_status_their_power_gives():
    assert (STATUS_AFTER["stop"], STATUS_AFTER["start"], STATUS_AFTER["reboot"]) == (
        STATUS_BY_POWER["off"], STATUS_BY_POWER["on"], STATUS_BY_POWER["on"])
    assert STATUS_DURING["reboot"] == "REBOOTING" and "REBOOTING" in WITH_CONSOLE


def test_a_delete_shows_deleting_and_ends_deleted_with_or_without_the_node():
    for action in ("delete", "force_delete"):
        assert (STATUS_DURING[action], STATUS_AFTER[action]) == ("DELETING", "DELETED")
        assert action not in ALLOWED_FROM  # a delete may start from any status


def test_a_resize_goes_from_active_or_shutoff_through_resize_to_verify_resize():
    assert ALLOWED_FROM["resize"] == ("ACTIVE", "SHUTOFF")
    assert (STATUS_DURING["resize"], STATUS_AFTER["resize"]) == ("RESIZE", "VERIFY_RESIZE")
    assert {"resize", "resize_confirm", "resize_revert"} <= set(VM_ONLY)  # a host's flavor is the host's


def test_only_a_confirm_a_revert_or_a_delete_ends_verify_resize():
    may = {action for action, allowed in ALLOWED_FROM.items() if InstanceStatus.VERIFY_RESIZE in allowed}

    assert may == {"resize_confirm", "resize_revert"}  # delete: from any status, freeing both flavors
    assert STATUS_DURING["resize_revert"] == "REVERT_RESIZE"
    # confirm and revert end in the status the VM had before its resize, kept with the old flavor
    assert "resize_confirm" not in STATUS_AFTER and "resize_revert" not in STATUS_AFTER
    assert {"RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE"} <= set(WITH_CONSOLE)


def test_a_node_report_leaves_a_resizing_vm_as_it_is():
    assert not {"RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE"} & set(STATUS_BY_REPORT.values())


def test_a_migration_goes_from_active_or_shutoff_through_migrating_to_verify_migrate_for_both_node_types():
    assert ALLOWED_FROM["migrate"] == ("ACTIVE", "SHUTOFF")  # paused: unpause first
    assert (STATUS_DURING["migrate"], STATUS_AFTER["migrate"]) == ("MIGRATING", "VERIFY_MIGRATE")
    assert not {"migrate", "migrate_confirm", "migrate_revert"} & set(VM_ONLY)  # a host moves to a VM too


def test_only_a_confirm_a_revert_or_a_delete_ends_verify_migrate():
    may = {action for action, allowed in ALLOWED_FROM.items() if InstanceStatus.VERIFY_MIGRATE in allowed}

    assert may == {"migrate_confirm", "migrate_revert"}  # delete: from any status, freeing both nodes
    assert STATUS_DURING["migrate_revert"] == "REVERT_MIGRATE"
    assert "migrate_confirm" not in STATUS_AFTER and "migrate_revert" not in STATUS_AFTER  # back as before it
    assert "VERIFY_MIGRATE" in WITH_CONSOLE and "MIGRATING" not in WITH_CONSOLE  # between two nodes: no console


def test_a_volume_is_on_two_nodes_only_while_its_instance_moves_and_a_report_leaves_it_moving():
    assert set(MOVING) == {STATUS_DURING["migrate"], STATUS_DURING["migrate_revert"]}
    assert not {"MIGRATING", "VERIFY_MIGRATE", "REVERT_MIGRATE"} & set(STATUS_BY_REPORT.values())
