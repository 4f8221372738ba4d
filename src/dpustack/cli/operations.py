"""`dpustack operation …`: the persisted long actions and their steps."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from dpustack.cli.context import api
from dpustack.cli.output import (Format, FormatOption, cell, duration, fields, print_json, print_list, print_one,
                                 stdout)

app = typer.Typer(help="Inspect operations (long actions such as create or add-nic).", no_args_is_help=True)


def _took(op: dict[str, Any]) -> str:
    return duration(op.get("started_at"), op.get("finished_at"))


COLUMNS = [("ID", "id"), ("Action", "action"), ("Status", "status"), ("Server", "instance_id"),
           ("Created", "created_at"), ("Took", _took), ("Error", "error")]
SHOW_FIELDS = fields("id", "action", "status", "instance_id", "project_id", "created_at", "started_at",
                     "finished_at") + [("took", _took), ("error", "error")]


@app.command("list")
def list_operations(
    server: Annotated[str | None, typer.Option(help="Only operations of this server (name or id).")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List operations, with their status and duration."""
    print_list(api().get("/v1/operations", instance=server), COLUMNS, fmt)


@app.command("show")
def show(operation_id: Annotated[str, typer.Argument(help="Operation id.")], fmt: FormatOption = Format.table) -> None:
    """Show an operation with each step, its timing, error and the agent's substeps."""
    op = api().get(f"/v1/operations/{operation_id}")
    if fmt is Format.json:
        print_json(op)
        return
    print_one(op, SHOW_FIELDS, fmt)
    stdout().print(_steps_table(op.get("steps") or []))


def _steps_table(steps: list[dict[str, Any]]) -> Table:
    table = Table(title="Steps", title_justify="left")
    for header in ("#", "Step", "Status", "Started", "Took", "Error"):
        table.add_column(header, overflow="fold")
    for step in steps:
        table.add_row(str(step["index"]), Text(step["name"]), step["status"], cell(step.get("started_at")),
                      duration(step.get("started_at"), step.get("finished_at")), Text(cell(step.get("error"))))
        if (step.get("detail") or {}).get("warning"):  # e.g. a force delete: the node was not cleaned
            table.add_row("", Text(f"  ! {step['detail']['warning']}"), "", "", "", "", style="yellow")
        if (moved := _move_text(step.get("detail") or {})) is not None:
            table.add_row("", Text(f"  = {moved}"), "", "", "", "")
        for sub in (step.get("detail") or {}).get("substeps") or []:
            took = f"{sub['duration_ms']}ms" if sub.get("duration_ms") is not None else "-"
            table.add_row("", Text(f"  └ {sub.get('name')}"), sub.get("status", "-"), "", took,
                          Text(cell(sub.get("error"))), style="dim")
    return table


def _move_text(detail: dict[str, Any]) -> str | None:
    """A migration's last step: where it moved, how long the move took and the instance was down."""
    if "duration_ms" not in detail:
        return None
    downtime = detail.get("downtime_ms")
    down = f"downtime {downtime}ms" if downtime is not None else "no downtime (it was off)"
    return f"{detail.get('from')} -> {detail.get('to')}: took {detail['duration_ms']}ms, {down}"
