"""Operations survive a dead worker: another one resumes at the step that was running."""

from __future__ import annotations

from datetime import timedelta

from dpustack.controller import orchestrator
from dpustack.controller.orchestrator import Orchestrator, Step
from dpustack.db.models import Operation, OperationStep, utcnow

CALLS: list[str] = []


class Recorder:
    action, rollback = "test_record", True

    def steps(self, params):
        def make(name):
            def do(ctx):
                CALLS.append(name)
                if name == params.get("fail"):
                    raise RuntimeError(f"{name} broke")
            return do

        def undo(name):
            return lambda ctx: CALLS.append(f"undo {name}")

        return [Step(n, make(n), undo(n)) for n in ("one", "two", "three")]

    def on_failure(self, ctx, step, message):
        CALLS.append(f"fault {step}: {message}")


orchestrator.register(Recorder())


def _submit(cloud, params):
    project = cloud.call("GET", "/v1/whoami")["project_id"]
    with cloud.context.transaction() as session:
        return orchestrator.submit(session, action="test_record", project_id=project, instance_id=None,
                                   params=params).id


def test_a_stale_running_operation_is_resumed_where_it_stopped(cloud):
    cloud.orchestrator.stop()
    CALLS.clear()
    op_id = _submit(cloud, {})
    with cloud.context.transaction() as session:  # a worker finished "one", then died during "two"
        op = session.get_one(Operation, op_id)
        op.status, op.worker, op.heartbeat_at = "running", "dead", utcnow() - timedelta(minutes=10)
        for step in session.query(OperationStep).filter_by(operation_id=op_id):
            step.status = {0: "done", 1: "running"}.get(step.index, "pending")
    worker = Orchestrator(cloud.context, workers=1)
    worker.start()
    try:
        final = cloud.wait({"id": op_id})
    finally:
        worker.stop()
    assert final["status"] == "succeeded"
    assert CALLS == ["two", "three"]
    assert [s["status"] for s in final["steps"]] == ["done", "done", "done"]


def test_a_live_operation_is_not_taken_by_a_second_worker(cloud):
    cloud.orchestrator.stop()
    op_id = _submit(cloud, {})
    with cloud.context.transaction() as session:
        op = session.get_one(Operation, op_id)
        op.status, op.worker, op.heartbeat_at = "running", "alive", utcnow()
    worker = Orchestrator(cloud.context, workers=1)
    assert worker._claim_one() is None


def test_a_failing_step_undoes_itself_and_everything_before_in_reverse(cloud):
    CALLS.clear()
    final = cloud.wait({"id": _submit(cloud, {"fail": "two"})})
    cloud.orchestrator.wake()
    assert final["status"] == "failed" and final["error"] == "two: RuntimeError: two broke"
    assert CALLS == ["one", "two", "undo two", "undo one", "fault two: RuntimeError: two broke"]
    assert [s["status"] for s in final["steps"]] == ["undone", "failed", "pending"]
