"""`dpustack accelerator …`: the accelerators the nodes' agents discovered and the ones a project registered
(the seed's /accelerators API)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from dpustack.cli.context import CliUsageError, api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one

app = typer.Typer(help="List, register, describe, attach and detach accelerators.", no_args_is_help=True)

Accelerator = Annotated[str, typer.Argument(help="Accelerator uuid or name.")]

COLUMNS = [("UUID", "uuid"), ("Name", "name"), ("Node", "node"),
           ("Type", lambda a: a["acc_specs"].get("device_type")), ("Num", lambda a: a["acc_specs"].get("num")),
           ("State", "state"), ("Attached", "attached")]
SHOW_FIELDS = fields("uuid", "name", "node", "family", "address", "vendor_id", "product_id", "resource_class",
                     "traits", "acc_specs", "state", "fault", "project_id", "attached", "revision")


@app.command("list")
def list_accelerators(fmt: FormatOption = Format.table) -> None:
    """List the accelerators you may see: your project's, and the discovered ones no project holds."""
    print_list(api().get("/accelerators")["accelerator"], COLUMNS, fmt)


@app.command("show")
def show(accelerator: Accelerator, fmt: FormatOption = Format.table) -> None:
    """Show one accelerator."""
    print_one(api().get(f"/accelerators/{accelerator}"), SHOW_FIELDS, fmt)


@app.command("register")
def register(name: Annotated[str, typer.Argument(help="Its name (unique).")],
             uuid: Annotated[str | None, typer.Option(help="Its uuid (default: a new one).")] = None,
             fmt: FormatOption = Format.table) -> None:
    """Register an accelerator of your project (one no agent discovers, e.g. reached over the network)."""
    print_one(api().register_accelerator(name, uuid), SHOW_FIELDS, fmt)


def _spec_value(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliUsageError(f"{option}: not JSON: {exc.msg}") from None


@app.command("set-spec")
def set_spec(accelerator: Accelerator,
             spec: Annotated[str, typer.Argument(help="acc_specs (the whole specs), or one of remote, num, "
                                                     "device_type, acc_capability.")],
             value: Annotated[str, typer.Argument(help="Its value as JSON, e.g. '{\"device_type\": \"CRYPTO\", "
                                                      "\"num\": 1}' or 4.")],
             fmt: FormatOption = Format.table) -> None:
    """Change a registered accelerator's specs; refused if someone changed them meanwhile."""
    body = {spec: _spec_value(value, "VALUE")}
    print_one(api().put(f"/accelerators/{accelerator}/{spec}", body), SHOW_FIELDS, fmt)


@app.command("attach")
def attach(accelerator: Accelerator, fmt: FormatOption = Format.table) -> None:
    """Attach it to your project, on the host it is installed on."""
    client = api()
    found = client.get(f"/accelerators/{accelerator}")
    print_one(client.put(f"/accelerators/{found['uuid']}", {"name": found["name"], "uuid": found["uuid"]}),
              SHOW_FIELDS, fmt)


@app.command("detach")
def detach(accelerator: Accelerator) -> None:
    """Detach it from your project's host."""
    api().delete(f"/accelerators/{accelerator}")
    typer.echo(f"accelerator {accelerator} detached")
