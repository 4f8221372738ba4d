"""`dpustack subnet …`: the IPv4 subnets of networks (ports get their address from the first with room)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one

app = typer.Typer(help="Manage subnets.", no_args_is_help=True)

Subnet = Annotated[str, typer.Argument(help="Subnet name or id.")]

COLUMNS = [("ID", "id"), ("Name", "name"), ("Network", "network_id"), ("CIDR", "cidr"), ("Gateway", "gateway_ip"),
           ("DNS", "dns_nameservers"), ("DHCP", "enable_dhcp")]
SHOW_FIELDS = fields("id", "name", "network_id", "cidr", "gateway_ip", "dns_nameservers", "enable_dhcp",
                     "created_at")


@app.command("create")
def create(
    network: Annotated[str, typer.Option(help="Network of the subnet (name or id).")],
    cidr: Annotated[str, typer.Option(help="IPv4 CIDR, e.g. 10.10.1.0/24.")],
    name: Annotated[str | None, typer.Option(help="Subnet name.")] = None,
    gateway: Annotated[str | None, typer.Option(help="Gateway address (default: the first host).")] = None,
    dns: Annotated[list[str] | None, typer.Option(
        "--dns", metavar="IP", help="DNS server handed out by DHCP, repeatable (default: the gateway).")] = None,
    no_dhcp: Annotated[bool, typer.Option("--no-dhcp", help="No DHCP service on this subnet.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Add a subnet to a network."""
    body: dict[str, Any] = {"network": network, "cidr": cidr}
    for key, value in (("name", name), ("gateway_ip", gateway), ("dns_nameservers", dns)):
        if value is not None:
            body[key] = value
    if no_dhcp:
        body["enable_dhcp"] = False
    print_one(api().post("/v1/subnets", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_subnets(
    network: Annotated[str | None, typer.Option(help="Only subnets of this network (name or id).")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List subnets, oldest first (the order ports take addresses in)."""
    print_list(api().get("/v1/subnets", network=network), COLUMNS, fmt)


@app.command("show")
def show(subnet: Subnet, fmt: FormatOption = Format.table) -> None:
    """Show one subnet."""
    print_one(api().get(f"/v1/subnets/{subnet}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(subnet: Subnet) -> None:
    """Delete a subnet (no port may have an address on it)."""
    api().delete(f"/v1/subnets/{subnet}")
    typer.echo(f"subnet {subnet} deleted")
