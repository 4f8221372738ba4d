"""`dpustack network …`: tenant networks (their subnets: `dpustack subnet …`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, print_list, print_one

app = typer.Typer(help="Manage networks.", no_args_is_help=True)

Network = Annotated[str, typer.Argument(help="Network name or id.")]


def _cidrs(network: dict[str, Any]) -> list[str]:
    return [s["cidr"] for s in network.get("subnets") or []]


def _gateways(network: dict[str, Any]) -> list[str]:
    return [s["gateway_ip"] for s in network.get("subnets") or [] if s.get("gateway_ip")]


COLUMNS = [("ID", "id"), ("Name", "name"), ("Subnets", _cidrs)]
SHOW_FIELDS = [("id", "id"), ("name", "name"), ("subnets", _cidrs), ("gateways", _gateways),
               ("project_id", "project_id"), ("created_at", "created_at")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Network name.")],
    subnet: Annotated[str | None, typer.Option(help="CIDR of a first subnet, e.g. 10.10.0.0/24; add more with `subnet create`.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a network, optionally with a first subnet."""
    body: dict[str, Any] = {"name": name}
    if subnet is not None:
        body["subnet"] = subnet
    print_one(api().post("/v1/networks", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_networks(fmt: FormatOption = Format.table) -> None:
    """List networks."""
    print_list(api().get("/v1/networks"), COLUMNS, fmt)


@app.command("show")
def show(network: Network, fmt: FormatOption = Format.table) -> None:
    """Show one network."""
    print_one(api().get(f"/v1/networks/{network}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(network: Network) -> None:
    """Delete a network and its subnets (it must have no ports)."""
    api().delete(f"/v1/networks/{network}")
    typer.echo(f"network {network} deleted")
