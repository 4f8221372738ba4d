"""`operation list/show`: steps with status, timings, error and the agent's substeps."""

from __future__ import annotations

import json

from cli_fake_api import FakeApi, Invoke


def test_operation_show_lists_steps_with_timings_and_substeps(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("flavors", name="bm.small", vcpus=8, ram=16384, disk=40, type="bm", extra_specs={})
    dpustack("server", "create", "web1", "--flavor", "bm.small", "--wait")
    op_id = next(iter(fake.store["operations"]))
    result = dpustack("operation", "show", op_id)
    assert result.exit_code == 0, result.output
    for text in ("schedule", "build on agent", "done", "1.50s", "└ power_on", "12ms", "succeeded"):
        assert text in result.stdout, text


def test_operation_list_filters_by_server(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("flavors", name="bm.small", vcpus=8, ram=16384, disk=40, type="bm", extra_specs={})
    dpustack("server", "create", "web1", "--flavor", "bm.small")
    dpustack("server", "create", "web2", "--flavor", "bm.small")
    result = dpustack("operation", "list", "--server", "web1", "-f", "json")
    operations = json.loads(result.stdout)
    assert len(operations) == 1 and operations[0]["action"] == "create"
    assert fake.requests[-1].url.params["instance"] == "web1"


def test_messages_with_brackets_are_shown_verbatim_not_as_markup(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("flavors", name="bm.small", vcpus=8, ram=16384, disk=40, type="bm", extra_specs={})
    fake.fail_step = ("build on agent", "[Errno 111] connection refused [/x]")
    failed = dpustack("server", "create", "web1", "--flavor", "bm.small", "--wait")
    assert failed.exit_code == 1
    assert "[Errno 111] connection refused [/x]" in failed.stderr
    op_id = next(iter(fake.store["operations"]))
    shown = dpustack("operation", "show", op_id)
    assert shown.exit_code == 0, shown.output
    assert "[Errno 111] connection refused [/x]" in shown.stdout
