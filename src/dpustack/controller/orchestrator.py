"""The orchestrator: runs every long action as a persisted operation of ordered steps.

An operation row and its step rows are written when the action is accepted.
Worker threads claim runnable operations with a conditional UPDATE (so one
process on SQLite or many replicas on PostgreSQL behave alike), run the steps
in order and record status, timings, errors and details as they go. A failing
step's undo and the undos of the steps before it run in reverse (undos are
idempotent; the failing step's own runs too, as it may have half-happened),
then the workflow records the fault. A step may retry instead (`Step.retry`,
`Step.undo_retry` say which failures): while it waits for its next attempt it
shows as ``waiting``, its detail the attempts and the last error, for up to
`step_retry_seconds`, then it fails (or its undo does) as any step does. A worker that dies mid-operation stops renewing its lease;
another worker then resumes the operation at the step that was running (every
step is idempotent); a worker stopped while a step waits leaves it so too. An instance, volume or snapshot an
operation holds (locked when it was accepted) is free again when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from dpustack.controller.context import ControllerContext
from dpustack.db.models import Instance, Operation, OperationStep, Volume, VolumeSnapshot, utcnow
from dpustack.errors import Conflict, DpustackError

log = logging.getLogger(__name__)


@dataclass
class StepContext:
    """What a step sees: its operation, the context, and data shared between steps."""

    context: ControllerContext
    operation_id: str
    project_id: str
    instance_id: str | None
    params: dict[str, Any]
    data: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work that also saves `data`, so a step's changes and its notes commit together."""
        with self.context.transaction() as session:
            yield session
            session.get_one(Operation, self.operation_id).context = dict(self.data)


StepFn = Callable[[StepContext], None]


@dataclass(frozen=True)
class Step:
    """One step; ``retry`` and ``undo_retry`` say which failures of ``do`` and ``undo`` are tried again
    (None: none), with the waits growing from `step_retry_interval` to 30 s, for up to
    `step_retry_seconds`."""

    name: str
    do: StepFn
    undo: StepFn | None = None
    retry: Callable[[BaseException], bool] | None = None
    undo_retry: Callable[[BaseException], bool] | None = None


class _Stopped(Exception):
    """The orchestrator stopped while a step waited to retry: the operation is left running, to resume."""


class Workflow(Protocol):
    """How one action is carried out."""

    action: str
    rollback: bool  # undo on failure (builds, attaches) or stop and let the user retry (deletes)

    def steps(self, params: dict[str, Any]) -> list[Step]: ...

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None: ...


_WORKFLOWS: dict[str, Workflow] = {}


def register(workflow: Workflow) -> Workflow:
    _WORKFLOWS[workflow.action] = workflow
    return workflow


def workflow_for(action: str) -> Workflow:
    return _WORKFLOWS[action]


def submit(session: Session, *, action: str, project_id: str, instance_id: str | None,
           params: dict[str, Any]) -> Operation:
    """Persist a new operation with its (pending) steps, in the caller's transaction."""
    steps = workflow_for(action).steps(params)
    operation = Operation(project_id=project_id, instance_id=instance_id, action=action,
                          params=params, context={})
    operation.steps = [OperationStep(index=i, name=s.name) for i, s in enumerate(steps)]
    session.add(operation)
    session.flush()
    return operation


def lock_instance(session: Session, instance: Instance, task: str) -> None:
    """Mark an instance busy with `task`; a second action at the same time is a 409."""
    result = session.execute(update(Instance)
                             .where(Instance.id == instance.id, Instance.task_state.is_(None))
                             .values(task_state=task)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(instance)
        raise Conflict(f"instance '{instance.name}' is busy ({instance.task_state}); try again when it ends",
                       field="instance")
    session.refresh(instance)


def readable(exc: BaseException) -> str:
    if isinstance(exc, DpustackError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class Orchestrator:
    """Claims and runs operations on a small pool of worker threads."""

    def __init__(self, context: ControllerContext, *, workers: int = 4, poll_interval: float = 0.5):
        self.context = context
        self.worker_id = f"worker-{uuid.uuid4().hex[:12]}"
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._slots = threading.Semaphore(workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._poll_interval = poll_interval
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        for target in (self._claim_loop, self._heartbeat_loop):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        """Look for work now (called after an operation is submitted)."""
        self._wake.set()

    # -- claiming ------------------------------------------------------------
    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._claim_some()
            except Exception:  # keep the loop alive; the next round retries
                log.exception("claiming operations failed")
            self._wake.wait(self._poll_interval)
            self._wake.clear()

    def _claim_some(self) -> None:
        while self._slots.acquire(blocking=False):
            operation_id = self._claim_one()
            if operation_id is None:
                self._slots.release()
                return
            with self._lock:
                self._running.add(operation_id)
            self._pool.submit(self._run_and_release, operation_id)

    def _claim_one(self) -> str | None:
        stale = utcnow() - timedelta(seconds=self.context.settings.lease_seconds)
        runnable = or_(Operation.status == "pending",
                       (Operation.status == "running") & (Operation.heartbeat_at < stale))
        with self.context.transaction() as session:
            ids = session.scalars(select(Operation.id).where(runnable)
                                  .order_by(Operation.created_at).limit(8)).all()
            for operation_id in ids:
                now = utcnow()
                claimed = session.execute(
                    update(Operation).where(Operation.id == operation_id, runnable)
                    .values(status="running", worker=self.worker_id, heartbeat_at=now)
                    .execution_options(synchronize_session=False))
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return operation_id
        return None

    def _heartbeat_loop(self) -> None:
        interval = max(self.context.settings.lease_seconds / 4, 0.05)
        while not self._stop.wait(interval):
            with self._lock:
                running = list(self._running)
            if not running:
                continue
            try:
                with self.context.transaction() as session:
                    session.execute(update(Operation)
                                    .where(Operation.id.in_(running), Operation.worker == self.worker_id)
                                    .values(heartbeat_at=utcnow())
                                    .execution_options(synchronize_session=False))
            except Exception:
                log.exception("renewing operation leases failed")

    def _run_and_release(self, operation_id: str) -> None:
        try:
            self.run(operation_id)
        except Exception:
            log.exception("operation %s crashed the worker", operation_id)
        finally:
            with self._lock:
                self._running.discard(operation_id)
            self._slots.release()
            self._wake.set()

    # -- running -------------------------------------------------------------
    def run(self, operation_id: str) -> None:
        """Run (or resume) one claimed operation to its end."""
        with self.context.transaction() as session:
            op = session.get_one(Operation, operation_id)
            if op.started_at is None:
                op.started_at = utcnow()
            workflow = workflow_for(op.action)
            ctx = StepContext(self.context, op.id, op.project_id, op.instance_id, dict(op.params),
                              dict(op.context))
            statuses = [row.status for row in op.steps]
        steps = workflow.steps(ctx.params)
        failed_at: int | None = None
        message = ""
        for index, step in enumerate(steps):
            if statuses[index] == "done":
                continue  # resumed after a crash: this one already happened
            ctx.detail = {}
            self._mark(ctx, index, status="running", started=True)
            try:
                self._retrying(ctx, index, step.do, step.retry, "running")
            except _Stopped:
                return  # its lease lapses; the next worker resumes it at this step
            except Exception as exc:
                if not isinstance(exc, DpustackError):
                    log.exception("step %s of operation %s failed", step.name, operation_id)
                failed_at, message = index, readable(exc)
                self._mark(ctx, index, status="failed", finished=True, error=message)
                break
            self._mark(ctx, index, status="done", finished=True)
        if failed_at is None:
            self._finish(ctx, "succeeded", None)
            return
        if workflow.rollback:
            try:
                problem = self._roll_back(ctx, steps, failed_at)
            except _Stopped:
                return  # resumed by the next worker
            if problem:
                cleanup = "; delete the instance to clean up" if ctx.instance_id else ""
                message = f"{message} ({problem}{cleanup})"
        try:
            workflow.on_failure(ctx, steps[failed_at].name, message)
        except Exception:
            log.exception("recording the fault of operation %s failed", operation_id)
        self._finish(ctx, "failed", f"{steps[failed_at].name}: {message}")

    def _retrying(self, ctx: StepContext, index: int, fn: StepFn, retry: Callable[[BaseException], bool] | None,
                  status: str) -> None:
        """Run ``fn`` (the step's do or undo); a failure ``retry`` accepts is tried again (the step
        ``waiting`` meanwhile, its detail the attempts and the last error, then ``status`` again) until
        `step_retry_seconds` have passed."""
        settings = self.context.settings
        deadline = time.monotonic() + settings.step_retry_seconds
        attempt = 0
        while True:
            try:
                fn(ctx)
                return
            except Exception as exc:
                attempt += 1
                if retry is None or not retry(exc):
                    raise
                delay = min(settings.step_retry_interval * 2 ** (attempt - 1), 30.0)
                if time.monotonic() + delay > deadline:
                    if isinstance(exc, DpustackError):
                        exc.message = f"{exc.message} (given up after {attempt} attempts)"
                    raise
                what = "attempt" if status == "running" else "undo attempt"
                note = {"attempts": attempt, "last_error": readable(exc),
                        "waiting": f"{what} {attempt} failed; trying again in {delay:g} s"}
                log.info("operation %s, step %d: %s: %s", ctx.operation_id, index, note["waiting"], readable(exc))
                if status == "running":  # the detail the step ends with keeps them
                    ctx.detail.update({"attempts": attempt, "last_error": readable(exc)})
                self._note(ctx, index, "waiting", note)
                if self._stop.wait(delay):
                    raise _Stopped() from exc
                self._note(ctx, index, status, {"waiting": None})

    def _note(self, ctx: StepContext, index: int, status: str, note: dict[str, Any]) -> None:
        """Set a step's status and merge `note` into its detail (its error as it is); renew the lease."""
        with self.context.transaction() as session:
            row = session.scalars(select(OperationStep).where(OperationStep.operation_id == ctx.operation_id,
                                                              OperationStep.index == index)).one()
            row.status = status
            row.detail = {key: value for key, value in {**(row.detail or {}), **note}.items() if value is not None}
            session.get_one(Operation, ctx.operation_id).heartbeat_at = utcnow()

    def _roll_back(self, ctx: StepContext, steps: list[Step], failed_at: int) -> str | None:
        """Undo in reverse; stop at the first undo that fails and say so.

        Stopping keeps the earlier steps' work (the node claim, the ports) in
        place, so a later delete can still find and clean up what is left.
        """
        for index in range(failed_at, -1, -1):
            undo = steps[index].undo
            if undo is None:
                continue
            ctx.detail = {}
            try:
                self._retrying(ctx, index, undo, steps[index].undo_retry,
                               "failed" if index == failed_at else "done")
            except _Stopped:
                raise
            except Exception as exc:
                problem = f"undo of {steps[index].name} failed: {readable(exc)}"
                log.warning("operation %s: %s", ctx.operation_id, problem)
                self._mark(ctx, index, status="undo_failed", error=problem, append_error=True)
                return problem
            if index != failed_at:
                self._mark(ctx, index, status="undone", keep_detail=True)
        return None

    def _mark(self, ctx: StepContext, index: int, *, status: str, started: bool = False,
              finished: bool = False, error: str | None = None, keep_detail: bool = False,
              append_error: bool = False) -> None:
        with self.context.transaction() as session:
            row = session.scalars(select(OperationStep).where(OperationStep.operation_id == ctx.operation_id,
                                                              OperationStep.index == index)).one()
            row.status = status
            now = utcnow()
            if started:
                row.started_at, row.finished_at, row.error = now, None, None
            if finished:
                row.finished_at = now
            if error is not None:
                row.error = f"{row.error}; {error}" if append_error and row.error else error
            if ctx.detail and not (keep_detail and row.detail):
                row.detail = dict(ctx.detail)
            op = session.get_one(Operation, ctx.operation_id)
            op.context = dict(ctx.data)
            op.heartbeat_at = now

    def _finish(self, ctx: StepContext, status: str, error: str | None) -> None:
        with self.context.transaction() as session:
            op = session.get_one(Operation, ctx.operation_id)
            op.status, op.error, op.finished_at = status, error, utcnow()
            op.context = dict(ctx.data)
            if ctx.instance_id:
                instance = session.get(Instance, ctx.instance_id)
                if instance is not None:
                    instance.task_state = None
            for held in (Volume, VolumeSnapshot):  # what the operation held is free for the next change
                session.execute(update(held).where(held.operation_id == ctx.operation_id).values(operation_id=None)
                                .execution_options(synchronize_session=False))
