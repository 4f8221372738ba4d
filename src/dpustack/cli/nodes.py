"""`dpustack node …`: the servers whose DPU agents report to the controller (admin)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, print_list, print_one

app = typer.Typer(help="Inspect nodes (admin).", no_args_is_help=True)


def _cpu(node: dict[str, Any]) -> str:
    return f"{node.get('claimed_cpu', 0)}/{node.get('total_cpu', 0)}"


def _mem(node: dict[str, Any]) -> str:
    return f"{node.get('claimed_mem', 0)}/{node.get('total_mem', 0)}"


COLUMNS = [("Hostname", "hostname"), ("Status", "status"), ("Ready", "ready"), ("Type", "node_type"),
           ("DPU", "dpu_model"), ("CPU claimed/total", _cpu), ("MiB claimed/total", _mem),
           ("Instances", "instance_count"), ("Last seen", "last_seen")]
SHOW_FIELDS = [("id", "id"), ("hostname", "hostname"), ("status", "status"), ("ready", "ready"),
               ("node_type", "node_type"), ("dpu_model", "dpu_model"), ("agent_url", "agent_url"),
               ("cpu claimed/used/total", lambda n: f"{n.get('claimed_cpu')}/{n.get('used_cpu')}/{n.get('total_cpu')}"),
               ("MiB claimed/used/total", lambda n: f"{n.get('claimed_mem')}/{n.get('used_mem')}/{n.get('total_mem')}"),
               ("instance_count", "instance_count"),
               ("instances", lambda n: [f"{i['uuid']} ({i['status']})" for i in n.get("instances") or []]),
               ("last_seen", "last_seen")]


@app.command("list")
def list_nodes(fmt: FormatOption = Format.table) -> None:
    """List nodes with their status and claimed capacity."""
    print_list(api().get("/v1/nodes"), COLUMNS, fmt)


@app.command("show")
def show(node: Annotated[str, typer.Argument(help="Hostname or id.")], fmt: FormatOption = Format.table) -> None:
    """Show one node."""
    print_one(api().get(f"/v1/nodes/{node}"), SHOW_FIELDS, fmt)
