"""`dpustack node …`: the servers whose DPU agents report to the controller (admin)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.numa import cells_text
from dpustack.cli.output import Format, FormatOption, print_list, print_one, stdout

app = typer.Typer(help="Enroll, inspect, maintain and remove nodes (admin).", no_args_is_help=True)

NodeArg = Annotated[str, typer.Argument(help="Hostname or id.")]


def _cpu(node: dict[str, Any]) -> str:
    return f"{node.get('claimed_cpu', 0)}/{node.get('total_cpu', 0)}"


def _mem(node: dict[str, Any]) -> str:
    return f"{node.get('claimed_mem', 0)}/{node.get('total_mem', 0)}"


def _ready(node: dict[str, Any]) -> str:
    """True, or False with the reason the controller gives."""
    if node.get("ready"):
        return "True"
    return f"False ({node['not_ready_reason']})" if node.get("not_ready_reason") else "False"


COLUMNS = [("Hostname", "hostname"), ("Status", "status"), ("Maintenance", "maintenance"), ("Ready", _ready),
           ("Type", "node_type"), ("DPU", "dpu_model"), ("CPU claimed/total", _cpu), ("MiB claimed/total", _mem),
           ("Instances", "instance_count"), ("Last seen", "last_seen")]
SHOW_FIELDS = [("id", "id"), ("hostname", "hostname"), ("status", "status"), ("maintenance", "maintenance"),
               ("ready", _ready), ("node_type", "node_type"), ("dpu_model", "dpu_model"), ("agent_url", "agent_url"),
               ("cpu claimed/used/total", lambda n: f"{n.get('claimed_cpu')}/{n.get('used_cpu')}/{n.get('total_cpu')}"),
               ("MiB claimed/used/total", lambda n: f"{n.get('claimed_mem')}/{n.get('used_mem')}/{n.get('total_mem')}"),
               ("instance_count", "instance_count"),
               ("instances", lambda n: [f"{i['uuid']} ({i['status']})" for i in n.get("instances") or []]),
               ("numa_cells", cells_text),
               ("joined_at", "joined_at"), ("last_seen", "last_seen")]
ENROLLED_FIELDS = [("hostname", lambda e: e["node"]["hostname"]), ("id", lambda e: e["node"]["id"]),
                   ("report_token", "report_token"),
                   ("controller_credential_sha256", "controller_credential_sha256")]


@app.command("list")
def list_nodes(fmt: FormatOption = Format.table) -> None:
    """List nodes with their status and claimed capacity."""
    print_list(api().get("/v1/nodes"), COLUMNS, fmt)


@app.command("show")
def show(node: NodeArg, fmt: FormatOption = Format.table) -> None:
    """Show one node; a VM node with its host's NUMA cells and what is free in each."""
    print_one(api().get(f"/v1/nodes/{node}"), SHOW_FIELDS, fmt)


@app.command("enroll")
def enroll(hostname: Annotated[str, typer.Argument(help="The hostname the node's agent reports.")],
           node_type: Annotated[str, typer.Option("--type", help="bm or vm.")] = "bm",
           fmt: FormatOption = Format.table) -> None:
    """Enroll a node; prints, this once, the report token and the controller credential's SHA-256 for its
    agent.toml."""
    print_one(api().post("/v1/nodes", {"hostname": hostname, "node_type": node_type}), ENROLLED_FIELDS, fmt)


@app.command("set")
def set_node(node: NodeArg,
             maintenance: Annotated[bool, typer.Option("--maintenance/--no-maintenance",
                                                       help="In maintenance a node is never scheduled; its "
                                                            "instances stay.")],
             fmt: FormatOption = Format.table) -> None:
    """Put a node in or out of maintenance."""
    print_one(api().patch(f"/v1/nodes/{node}", {"maintenance": maintenance}), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(node: NodeArg,
           force: Annotated[bool, typer.Option("--force", help="Forget the node's instances first: the "
                                                               "controller releases them, the node is not "
                                                               "cleaned.")] = False) -> None:
    """Remove a node and its tokens; refused while it has instances, unless --force."""
    api().delete(f"/v1/nodes/{node}", force="true" if force else None)
    stdout().print(f"Deleted node {node}", markup=False, highlight=False)


@app.command("rotate-credentials")
def rotate_credentials(node: NodeArg, fmt: FormatOption = Format.table) -> None:
    """Give the node a new report token and the controller a new credential for it, with no gap."""
    print_one(api().post(f"/v1/nodes/{node}/rotate-credentials"), SHOW_FIELDS, fmt)
