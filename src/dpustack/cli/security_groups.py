"""`dpustack security-group …`: security groups and their rules (what ports may send and receive)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from dpustack.cli.context import CliUsageError, api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one

app = typer.Typer(help="Manage security groups and their rules.", no_args_is_help=True)
rules = typer.Typer(help="Add and remove the rules of a security group.", no_args_is_help=True)
app.add_typer(rules, name="rule")

SecurityGroup = Annotated[str, typer.Argument(help="Security group name or id.")]


class Direction(str, Enum):
    ingress = "ingress"
    egress = "egress"


class Protocol(str, Enum):
    tcp = "tcp"
    udp = "udp"
    icmp = "icmp"


class Ethertype(str, Enum):
    ipv4 = "IPv4"
    ipv6 = "IPv6"


def _ports(rule: dict[str, Any]) -> str:
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if low is None:
        return "any"
    return str(low) if high in (None, low) else f"{low}:{high}"


def _remote(rule: dict[str, Any]) -> str:
    if rule.get("remote_group_id"):
        return f"group {rule['remote_group_id']}"
    return rule.get("remote_ip_prefix") or "any"


COLUMNS = [("ID", "id"), ("Name", "name"), ("Description", "description"),
           ("Rules", lambda g: len(g.get("rules") or []))]
SHOW_FIELDS = fields("id", "name", "description", "project_id", "created_at")
RULE_COLUMNS = [("ID", "id"), ("Direction", "direction"), ("Ethertype", "ethertype"),
                ("Protocol", lambda r: r.get("protocol") or "any"), ("Ports", _ports), ("Remote", _remote)]
RULE_FIELDS = [*fields("id", "security_group_id", "direction", "ethertype"),
               ("protocol", lambda r: r.get("protocol") or "any"), ("ports", _ports), ("remote", _remote),
               ("created_at", "created_at")]


def parse_port_range(text: str) -> tuple[int, int]:
    """`22` or `1000:2000` (the API checks the numbers are 1-65535)."""
    low, sep, high = text.partition(":")
    try:
        return int(low), int(high) if sep else int(low)
    except ValueError:
        raise CliUsageError(f"--port expects PORT or MIN:MAX, got '{text}'") from None


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Security group name.")],
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a security group; it starts with rules that allow all egress."""
    body: dict[str, Any] = {"name": name}
    if description is not None:
        body["description"] = description
    _print_group(api().post("/v1/security-groups", body), fmt)


@app.command("list")
def list_groups(fmt: FormatOption = Format.table) -> None:
    """List security groups (the project's `default` group is made on first use)."""
    print_list(api().get("/v1/security-groups"), COLUMNS, fmt)


@app.command("show")
def show(security_group: SecurityGroup, fmt: FormatOption = Format.table) -> None:
    """Show one security group with its rules."""
    _print_group(api().get(f"/v1/security-groups/{security_group}"), fmt)


@app.command("delete")
def delete(security_group: SecurityGroup) -> None:
    """Delete a security group (refused while a port uses it, and for `default`)."""
    api().delete(f"/v1/security-groups/{security_group}")
    typer.echo(f"security-group {security_group} deleted")


def _print_group(group: dict[str, Any], fmt: Format) -> None:
    print_one(group, SHOW_FIELDS, fmt)
    if fmt is Format.table:
        print_list(group.get("rules") or [], RULE_COLUMNS, fmt, title="Rules")


@rules.command("create")
def create_rule(
    security_group: SecurityGroup,
    direction: Annotated[Direction, typer.Option(help="ingress: traffic to the ports; egress: from them.")],
    protocol: Annotated[Protocol | None, typer.Option(help="Protocol (default: any).")] = None,
    port: Annotated[str | None, typer.Option(metavar="PORT[:MAX]",
                                             help="Destination port or range, tcp and udp only.")] = None,
    remote_ip: Annotated[str | None, typer.Option(help="Remote addresses (CIDR), e.g. 0.0.0.0/0.")] = None,
    remote_group: Annotated[str | None, typer.Option(
        help="Allow only the ports of this security group (name or id).")] = None,
    ethertype: Annotated[Ethertype, typer.Option(help="IP version.")] = Ethertype.ipv4,
    fmt: FormatOption = Format.table,
) -> None:
    """Allow traffic through a security group."""
    body: dict[str, Any] = {"direction": direction.value, "ethertype": ethertype.value}
    if protocol is not None:
        body["protocol"] = protocol.value
    if port is not None:
        body["port_range_min"], body["port_range_max"] = parse_port_range(port)
    if remote_ip is not None:
        body["remote_ip_prefix"] = remote_ip
    if remote_group is not None:
        body["remote_group"] = remote_group
    print_one(api().post(f"/v1/security-groups/{security_group}/rules", body), RULE_FIELDS, fmt)


@rules.command("delete")
def delete_rule(rule_id: Annotated[str, typer.Argument(help="Rule id.")]) -> None:
    """Delete a rule."""
    api().delete(f"/v1/security-group-rules/{rule_id}")
    typer.echo(f"security-group rule {rule_id} deleted")
