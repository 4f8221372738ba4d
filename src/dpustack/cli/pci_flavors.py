"""`dpustack pci-flavor …`: named PCI device descriptions that flavors and NICs request."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import CliUsageError, api
from dpustack.cli.output import Format, FormatOption, fields, one_per_line, print_list, print_one
from dpustack.cli.parsing import key_values

app = typer.Typer(help="Manage PCI flavors (named PCI device descriptions).", no_args_is_help=True)

PciFlavor = Annotated[str, typer.Argument(help="PCI flavor name or id (0 or _flavor_attrs: the usable attributes).")]
COLUMNS = [("ID", "id"), ("Name", "name"), ("Description", "description"), ("Spec", "spec")]
SHOW_FIELDS = [*fields("id", "name", "description"), ("spec", one_per_line("spec"))]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="PCI flavor name.")],
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a PCI flavor (admin); define it with `pci-flavor update --set`."""
    body: dict[str, Any] = {"name": name}
    if description is not None:
        body["description"] = description
    print_one(api().post("/v1/pci-flavors", body), SHOW_FIELDS, fmt)


@app.command("update")
def update(
    pci_flavor: PciFlavor,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="An attribute and the pattern its value must match, e.g. product_id='000[1-2]' (repeatable). "
             "The pairs given become the flavor's whole definition.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Define a PCI flavor by attribute patterns, or change its description (admin)."""
    changes: dict[str, Any] = key_values(set_ or [], "--set")
    if description is not None:
        if "description" in changes:
            raise CliUsageError("description given both as --description and as --set description=…")
        changes["description"] = description
    if not changes:
        raise CliUsageError("nothing to update: give --set KEY=VALUE or --description")
    body = {"action": "update", "pci-flavor": changes}
    print_one(api().put(f"/v1/pci-flavors/{pci_flavor}", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_pci_flavors(fmt: FormatOption = Format.table) -> None:
    """List PCI flavors; the first, _flavor_attrs (id 0), names the attributes a spec may use."""
    print_list(api().get("/v1/pci-flavors"), COLUMNS, fmt)


@app.command("show")
def show(pci_flavor: PciFlavor, fmt: FormatOption = Format.table) -> None:
    """Show one PCI flavor and its spec."""
    print_one(api().get(f"/v1/pci-flavors/{pci_flavor}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(pci_flavor: PciFlavor) -> None:
    """Delete a PCI flavor (admin; refused while a flavor's extra spec names it)."""
    api().delete(f"/v1/pci-flavors/{pci_flavor}")
    typer.echo(f"pci-flavor {pci_flavor} deleted")
