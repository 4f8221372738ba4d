"""`dpustack port …`: the NICs' ports (created here, or by `server create` / `server add-nic`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import CliUsageError, api
from dpustack.cli.output import Format, FormatOption, one_per_line, print_list, print_one
from dpustack.cli.parsing import VnicType
from dpustack.cli.progress import follow
from dpustack.errors import ApiError

app = typer.Typer(help="Manage ports: create, list, show, delete, security groups and QoS limits.", no_args_is_help=True)

SecurityGroupOption = Annotated[list[str] | None, typer.Option(
    "--security-group", metavar="GROUP",
    help="Security group (name or id), repeatable; none given on create: the project's default group.")]


def _ips(port: dict[str, Any]) -> list[str]:
    return [ip["ip_address"] for ip in port.get("fixed_ips") or []]


def _qos(port: dict[str, Any]) -> dict[str, int] | None:
    """The limits that are set (`bps=2000000`), or None (shown as '-') when the port is unlimited."""
    return {k: v for k, v in (port.get("qos") or {}).items() if v is not None} or None


COLUMNS = [("ID", "id"), ("MAC", "mac_address"), ("IPs", _ips), ("Network", "network_id"),
           ("Server", "instance_id"), ("Status", "status"), ("Host", "binding_host_id")]
SHOW_FIELDS = [("id", "id"), ("name", "name"), ("status", "status"), ("mac_address", "mac_address"),
               ("fixed_ips", _ips), ("network_id", "network_id"), ("instance_id", "instance_id"),
               ("vnic_type", "vnic_type"), ("requested_chassis", "requested_chassis"),
               ("binding_host_id", "binding_host_id"), ("binding_profile", one_per_line("binding_profile")),
               ("security_groups", "security_groups"), ("qos", _qos), ("project_id", "project_id"),
               ("created_at", "created_at")]


@app.command("create")
def create(
    network: Annotated[str, typer.Option(help="Network of the port (name or id).")],
    name: Annotated[str | None, typer.Option(help="Port name.")] = None,
    mac: Annotated[str | None, typer.Option(help="MAC address (default: generated).")] = None,
    vnic_type: Annotated[VnicType, typer.Option(
        help="How the port is bound; remote-managed gets a VF of a DPU.")] = VnicType.normal,
    security_group: SecurityGroupOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a port, to attach later with `server create --port` or `server add-nic --port`."""
    body: dict[str, Any] = {"network": network, "vnic_type": vnic_type.value}
    for key, value in (("name", name), ("mac", mac), ("security_groups", security_group)):
        if value is not None:
            body[key] = value
    print_one(api().post("/v1/ports", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_ports(
    server: Annotated[str | None, typer.Option(help="Only ports of this server (name or id).")] = None,
    network: Annotated[str | None, typer.Option(help="Only ports on this network (name or id).")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List ports."""
    print_list(api().get("/v1/ports", instance=server, network=network), COLUMNS, fmt)


@app.command("show")
def show(port_id: Annotated[str, typer.Argument(help="Port id.")], fmt: FormatOption = Format.table) -> None:
    """Show one port, with its binding."""
    print_one(api().get(f"/v1/ports/{port_id}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(port_id: Annotated[str, typer.Argument(help="Port id.")]) -> None:
    """Delete a port (it must not be attached to a server)."""
    api().delete(f"/v1/ports/{port_id}")
    typer.echo(f"port {port_id} deleted")


@app.command("set")
def set_port(
    port_id: Annotated[str, typer.Argument(help="Port id.")],
    security_group: SecurityGroupOption = None,
    qos_bps: Annotated[int | None, typer.Option(
        "--qos-bps", min=1, metavar="BITS/S",
        help="Limit what the port's instance sends to this many bits per second.")] = None,
    qos_pps: Annotated[int | None, typer.Option(
        "--qos-pps", min=1, metavar="PACKETS/S",
        help="Limit it to this many packets per second (an OVS meter set by the node's agent).")] = None,
    no_qos: Annotated[bool, typer.Option("--no-qos", help="Remove the port's limits.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Replace a port's security groups with those given; set or remove its limits (QoS).

    A limit not given keeps its value. A change of limits is an operation: it is followed to its end
    (as `--wait` does), and a refused one fails with its fault. With both kinds of change, the
    limits are changed first and put back if the security groups are refused.
    """
    qos_given = qos_bps is not None or qos_pps is not None
    if not (security_group or qos_given or no_qos):
        raise CliUsageError("nothing to set: give --security-group (repeatable), --qos-bps/--qos-pps or --no-qos")
    if no_qos and qos_given:
        raise CliUsageError("give either --no-qos or --qos-bps/--qos-pps, not both")
    client = api()
    port: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    label = f"qos of port {port_id}"
    if qos_given or no_qos:
        port = client.get(f"/v1/ports/{port_id}")
        limits = port.get("qos") or {}
        previous = {"bps": limits.get("bps"), "pps": limits.get("pps")}
        if no_qos:
            follow(client.delete(f"/v1/ports/{port['id']}/qos"), True, label)
        else:
            follow(client.put(f"/v1/ports/{port['id']}/qos", {
                "bps": previous["bps"] if qos_bps is None else qos_bps,
                "pps": previous["pps"] if qos_pps is None else qos_pps}), True, label)
        port = client.get(f"/v1/ports/{port['id']}")
    if security_group:
        try:
            port = client.put(f"/v1/ports/{port_id}", {"security_groups": security_group})
        except ApiError:
            if previous is not None and port is not None:  # no half-done change
                follow(client.put(f"/v1/ports/{port['id']}/qos", previous), True, f"{label} (put back)")
            raise
    assert port is not None
    print_one(port, SHOW_FIELDS, fmt)
