"""`dpustack flavor …`: server sizes (admin creates, everyone reads)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated
from urllib.parse import quote

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, fields, one_per_line, print_list, print_one
from dpustack.cli.parsing import key_values

app = typer.Typer(help="Manage flavors (server sizes).", no_args_is_help=True)

Flavor = Annotated[str, typer.Argument(help="Flavor name or id.")]
COLUMNS = [("ID", "id"), ("Name", "name"), ("Type", "type"), ("vCPUs", "vcpus"), ("RAM MiB", "ram"),
           ("Disk GiB", "disk")]
SHOW_FIELDS = [*fields("id", "name", "type", "vcpus", "ram", "disk"), ("extra_specs", one_per_line("extra_specs"))]


class FlavorType(str, Enum):
    bm = "bm"
    vm = "vm"


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Flavor name.")],
    vcpus: Annotated[int, typer.Option(help="Number of CPUs.", min=1)],
    ram: Annotated[int, typer.Option(help="Memory in MiB.", min=1)],
    disk: Annotated[int, typer.Option(help="Boot disk in GiB.", min=0)],
    type_: Annotated[FlavorType, typer.Option("--type", help="bm (bare metal) or vm.")] = FlavorType.bm,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a flavor (admin)."""
    body = {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "type": type_.value}
    print_one(api().post("/v1/flavors", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_flavors(fmt: FormatOption = Format.table) -> None:
    """List flavors."""
    print_list(api().get("/v1/flavors"), COLUMNS, fmt)


@app.command("show")
def show(flavor: Flavor, fmt: FormatOption = Format.table) -> None:
    """Show one flavor."""
    print_one(api().get(f"/v1/flavors/{flavor}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(flavor: Flavor) -> None:
    """Delete a flavor (admin)."""
    api().delete(f"/v1/flavors/{flavor}")
    typer.echo(f"flavor {flavor} deleted")


@app.command("set")
def set_properties(
    flavor: Flavor,
    prop: Annotated[list[str], typer.Option(
        "--property", metavar="KEY=VALUE",
        help="Extra spec to set, e.g. pci_passthrough:pci_flavor='1:IntelGPU,NvGPU;1:QA1' (repeatable).")],
    fmt: FormatOption = Format.table,
) -> None:
    """Set extra specs of a flavor, keeping the others (admin)."""
    specs = key_values(prop, "--property")
    print_one(api().put(f"/v1/flavors/{flavor}/extra-specs", specs), SHOW_FIELDS, fmt)


@app.command("unset")
def unset_properties(
    flavor: Flavor,
    prop: Annotated[list[str], typer.Option("--property", metavar="KEY",
                                            help="Extra spec to remove (repeatable).")],
    fmt: FormatOption = Format.table,
) -> None:
    """Remove extra specs from a flavor (admin)."""
    client = api()
    result = None
    for key in prop:
        result = client.delete(f"/v1/flavors/{flavor}/extra-specs/{quote(key, safe=':')}")
    print_one(result, SHOW_FIELDS, fmt)
