"""Long actions: print the operation id, or follow its steps with a Rich progress bar."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from dpustack.cli.context import api
from dpustack.cli.output import duration, stderr, stdout
from dpustack.client import Client
from dpustack.errors import ApiError, DpustackError

WaitOption = Annotated[bool, typer.Option("--wait", help="Wait for the operation to end, showing its steps.")]

_PENDING = ("pending", "running", "waiting")  # waiting: a step waits to try again
_MARKS = {"done": "[green]✓[/]", "failed": "[red]✗[/]", "undone": "[yellow]↶[/]",
          "undo_failed": "[red]✗ undo[/]", "skipped": "[dim]-[/]"}


class OperationFailed(DpustackError):
    """A long action ended in failure; the message carries the operation's error or the fault."""

    code = "operation_failed"


def follow(op: dict[str, Any], wait: bool, label: str) -> dict[str, Any] | None:
    """Report an accepted operation; with `wait`, return it once succeeded or raise OperationFailed."""
    if not wait:
        stdout().print(f"{label}: operation {op['id']} {op['status']} "
                       f"(follow it with: dpustack operation show {op['id']})", highlight=False, markup=False)
        return None
    client = api()
    final = _watch(client, op, label)
    if final["status"] != "succeeded":
        raise OperationFailed(_failure_message(client, final, label))
    return final


def _watch(client: Client, op: dict[str, Any], label: str) -> dict[str, Any]:
    reported: set[tuple[int, str]] = set()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=stderr()) as progress:
        task = progress.add_task(label, total=len(op.get("steps") or []) or None)
        for op in client.watch_operation(op["id"]):
            steps = op.get("steps") or []
            for step in steps:
                key = (step["index"], step["status"])
                if step["status"] in _MARKS and key not in reported:
                    reported.add(key)
                    progress.console.print(f"  {_MARKS[step['status']]} {escape(step['name'])} "
                                           f"[dim]{duration(step.get('started_at'), step.get('finished_at'))}[/]")
            running = next((s["name"] if s["status"] == "running" else f"{s['name']} (waiting to try again)"
                            for s in steps if s["status"] in ("running", "waiting")), op["status"])
            finished = sum(1 for s in steps if s["status"] not in _PENDING)
            progress.update(task, total=len(steps) or None, completed=finished,
                            description=escape(f"{label}: {running}"))
    return op


def _failure_message(client: Client, op: dict[str, Any], label: str) -> str:
    failed_step = next((s for s in op.get("steps") or [] if s["status"] == "failed"), None)
    reason = op.get("error") or (failed_step or {}).get("error") or _instance_fault(client, op) or "unknown error"
    if failed_step is None:
        return f"{label} failed: {reason}"
    name = failed_step["name"]
    return f"{label} failed at step '{name}': {reason.removeprefix(f'{name}: ')}"


def _instance_fault(client: Client, op: dict[str, Any]) -> str | None:
    if not op.get("instance_id"):
        return None
    try:
        instance = client.get(f"/v1/instances/{op['instance_id']}")
    except ApiError:
        return None
    return (instance.get("fault") or {}).get("message")
