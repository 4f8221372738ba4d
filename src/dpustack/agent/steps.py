"""Run an action as ordered, named steps, each with an undo, and log what happened.

With ``rollback=True`` a failing step is undone (it may have half-happened)
and then every step done before it, in reverse; the error is raised again
carrying the step log as ``steps``. With ``rollback=False`` (delete) the run
just stops at the failing step.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from dpustack.contract.instances import StepLog
from dpustack.errors import DpustackError

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One named piece of work and how to take it back (None: nothing to take back)."""

    name: str
    do: Callable[[], Any]
    undo: Callable[[], Any] | None = None


def run_steps(action: str, steps: list[Step], *, rollback: bool = True) -> list[StepLog]:
    """Run ``steps`` in order; return their log, or raise with it as ``steps`` in the error."""
    logs: list[StepLog] = []
    for index, step in enumerate(steps):
        started = time.monotonic()
        try:
            step.do()
        except Exception as exc:
            logs.append(StepLog(name=step.name, status="failed", duration_ms=_ms_since(started), error=_describe(exc)))
            log.warning("%s: step '%s' failed: %s", action, step.name, _describe(exc))
            if rollback:
                _undo(action, steps[: index + 1], logs)
            raise _with_steps(action, step.name, exc, logs, rolled_back=rollback) from exc
        logs.append(StepLog(name=step.name, status="done", duration_ms=_ms_since(started)))
    return logs


def _undo(action: str, steps: list[Step], logs: list[StepLog]) -> None:
    for step, entry in reversed(list(zip(steps, logs))):
        if step.undo is None:
            continue
        started = time.monotonic()
        try:
            step.undo()
        except Exception as exc:
            log.error("%s: undoing step '%s' failed: %s", action, step.name, _describe(exc))
            entry.error = f"{entry.error}; undo: {_describe(exc)}" if entry.error else f"undo: {_describe(exc)}"
            entry.status = "undo_failed"
        else:
            if entry.status == "done":
                entry.status = "undone"
        entry.duration_ms += _ms_since(started)


def _with_steps(action: str, step: str, exc: Exception, logs: list[StepLog], *,
                rolled_back: bool) -> DpustackError:
    """The error to answer: the original kind if it is one of ours, with the step log attached."""
    outcome = "rolled back" if rolled_back else "stopped"
    message = f"{action} failed at step '{step}' ({outcome}): {_describe(exc)}"
    error = copy.copy(exc) if isinstance(exc, DpustackError) else DpustackError(message)
    error.message, error.args = message, (message,)
    error.extra = {**error.extra, "steps": [entry.model_dump() for entry in logs]}
    return error


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, DpustackError) else f"{type(exc).__name__}: {exc}"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

