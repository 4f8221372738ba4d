"""The step runner: ordered steps, undo in reverse on failure, and a step log for the caller."""

import pytest

from dpustack.agent.steps import Step, run_steps
from dpustack.errors import Conflict, DpustackError, DriverError


def _recording(events: list[str], name: str, fail: Exception | None = None) -> Step:
    def do() -> None:
        events.append(f"do {name}")
        if fail:
            raise fail
    return Step(name, do, lambda: events.append(f"undo {name}"))


def test_a_failing_step_is_undone_itself_then_everything_before_it_in_reverse():
    events: list[str] = []
    steps = [_recording(events, "a"), _recording(events, "b"), _recording(events, "c", DriverError("boom")),
             _recording(events, "d")]

    with pytest.raises(DriverError) as caught:
        run_steps("test action", steps)

    assert events == ["do a", "do b", "do c", "undo c", "undo b", "undo a"]
    assert caught.value.message == "test action failed at step 'c' (rolled back): boom"
    assert [(s["name"], s["status"]) for s in caught.value.extra["steps"]] == [
        ("a", "undone"), ("b", "undone"), ("c", "failed")]


def test_without_rollback_the_run_just_stops_at_the_failure():
    events: list[str] = []

    with pytest.raises(DriverError) as caught:
        run_steps("delete", [_recording(events, "a"), _recording(events, "b", DriverError("boom")),
                             _recording(events, "c")], rollback=False)

    assert events == ["do a", "do b"]
    assert "(stopped)" in caught.value.message
    assert [s["status"] for s in caught.value.extra["steps"]] == ["done", "failed"]


def test_the_error_keeps_its_kind_and_field():
    with pytest.raises(Conflict) as caught:
        run_steps("x", [_recording([], "a", Conflict("busy", field="port_id"))])

    assert caught.value.field == "port_id" and caught.value.status == 409


def test_a_bug_in_a_step_still_rolls_back_and_is_an_internal_error():
    events: list[str] = []

    with pytest.raises(DpustackError) as caught:
        run_steps("x", [_recording(events, "a"), _recording(events, "b", KeyError("slot"))])

    assert events[-2:] == ["undo b", "undo a"]
    assert caught.value.code == "internal_error"
    assert "KeyError" in caught.value.message
