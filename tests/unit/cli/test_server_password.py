"""`dpustack server set-password`: asked twice without echo or read from stdin, never an argument or shown."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke

PASSWORD = "c0rrect horse battery"


def _server(fake: FakeApi) -> dict:
    return fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None)


def _sent(fake: FakeApi) -> list[dict]:
    return [json.loads(r.content) for r in fake.requests if r.url.path.endswith("/admin-password")]


def test_the_password_is_asked_twice_without_echo_and_the_next_boot_is_named(dpustack: Invoke,
                                                                             fake: FakeApi) -> None:
    server = _server(fake)
    result = dpustack("server", "set-password", "web1", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert _sent(fake) == [{"new_password": PASSWORD}]
    assert fake.requests[-1].url.path == "/v1/instances/web1/admin-password"
    assert fake.admin_passwords == {server["id"]: PASSWORD}
    assert "New password:" in result.output and "Repeat for confirmation:" in result.output
    assert "takes it at its next boot (e.g. dpustack server reboot web1)" in result.stdout
    assert PASSWORD not in result.output


def test_two_different_answers_send_nothing(dpustack: Invoke, fake: FakeApi) -> None:
    _server(fake)
    result = dpustack("server", "set-password", "web1", input="first-Try1\nsecond-Try2\n")
    assert result.exit_code == 1  # click asks again, finds no more input and aborts
    assert "do not match" in result.output
    assert _sent(fake) == []
    assert "first-Try1" not in result.output and "second-Try2" not in result.output


def test_password_stdin_reads_one_line_and_keeps_its_blanks(dpustack: Invoke, fake: FakeApi) -> None:
    _server(fake)
    result = dpustack("server", "set-password", "web1", "--password-stdin", input=f" {PASSWORD} \r\nignored\n")
    assert result.exit_code == 0, result.output
    assert _sent(fake) == [{"new_password": f" {PASSWORD} "}]
    assert "New password" not in result.output and PASSWORD not in result.output
    assert "next boot" in result.stdout


def test_password_stdin_without_a_password_is_a_usage_error(dpustack: Invoke, fake: FakeApi) -> None:
    _server(fake)
    for given in ("", "\n"):
        result = dpustack("server", "set-password", "web1", "--password-stdin", input=given)
        assert result.exit_code == 1
        assert "error: --password-stdin: standard input holds no password on its first line" in result.stderr
    assert _sent(fake) == []


def test_the_password_is_never_an_argument(dpustack: Invoke, fake: FakeApi) -> None:
    _server(fake)
    for args in (("web1", PASSWORD), ("web1", "--password", PASSWORD)):
        result = dpustack("server", "set-password", *args)
        assert result.exit_code == 2, result.output
    assert _sent(fake) == []


def test_the_controllers_refusals_are_reported_with_their_field(dpustack: Invoke, fake: FakeApi) -> None:
    _server(fake)
    missing = dpustack("server", "set-password", "web9", "--password-stdin", input=f"{PASSWORD}\n")
    assert missing.exit_code == 1
    assert "error: instance 'web9' not found (field: instance)" in missing.stderr
    too_long = "x" * 256
    refused = dpustack("server", "set-password", "web1", "--password-stdin", input=f"{too_long}\n")
    assert refused.exit_code == 1 and "(field: new_password)" in refused.stderr
    assert PASSWORD not in missing.output and too_long not in refused.output


# -- a VM: set now through its guest agent, as an operation ---------------------------------------------------
AGENT_SILENT = ("node dpu-vm-1: set password of instance x failed at step 'set password of root in VM' (rolled "
                "back): cannot set the password of 'root' in domain x through its guest agent: Guest agent is not "
                "responding: QEMU guest agent is not connected")


def _vm(fake: FakeApi, status: str = "ACTIVE") -> dict:
    return fake.add("instances", name="vm1", status=status, node="dpu-vm-1", ports=[], volumes=[], fault=None)


def test_a_vm_gets_the_password_now_and_wait_follows_the_operation(dpustack: Invoke, fake: FakeApi) -> None:
    vm = _vm(fake)
    result = dpustack("server", "set-password", "vm1", "--password-stdin", "--wait", input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert _sent(fake) == [{"new_password": PASSWORD}] and fake.admin_passwords == {vm["id"]: PASSWORD}
    assert "set_password" in result.stderr  # the step, as it ran
    assert "set-password vm1: root's password is set in the VM" in result.stdout
    assert "next boot" not in result.output and PASSWORD not in result.output


def test_without_wait_a_vm_names_the_operation_to_follow(dpustack: Invoke, fake: FakeApi) -> None:
    _vm(fake)
    result = dpustack("server", "set-password", "vm1", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    (op,) = fake.store["operations"].values()
    assert op["action"] == "set_password"
    assert f"set-password vm1: operation {op['id']} pending (follow it with: dpustack operation show {op['id']})" \
        in result.stdout


def test_a_vm_whose_guest_agent_does_not_answer_fails_with_the_reason(dpustack: Invoke, fake: FakeApi) -> None:
    _vm(fake)
    fake.fail_step = ("set_password", AGENT_SILENT)
    result = dpustack("server", "set-password", "vm1", "--password-stdin", "--wait", input=f"{PASSWORD}\n")
    assert result.exit_code == 1
    assert "set-password vm1 failed at step 'set_password'" in result.stderr
    assert "QEMU guest agent is not connected" in result.stderr and PASSWORD not in result.output


def test_a_stopped_vm_is_refused(dpustack: Invoke, fake: FakeApi) -> None:
    _vm(fake, status="SHUTOFF")
    result = dpustack("server", "set-password", "vm1", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.exit_code == 1
    assert "is SHUTOFF: a VM's password is set in its running guest, so it must be ACTIVE (field: instance)" \
        in result.stderr
    assert fake.store["operations"] == {}
