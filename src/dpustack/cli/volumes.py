"""`dpustack volume …`: block volumes served to servers through DPU storage functions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one

app = typer.Typer(help="Manage volumes.", no_args_is_help=True)

Volume = Annotated[str, typer.Argument(help="Volume name or id.")]
COLUMNS = [("ID", "id"), ("Name", "name"), ("Size GiB", "size"), ("Status", "status"),
           ("Server", "instance_id"), ("Bootable", "bootable")]
SHOW_FIELDS = fields("id", "name", "size", "status", "instance_id", "bootable", "image_id", "project_id",
                     "created_at")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Volume name.")],
    size: Annotated[int, typer.Option(help="Size in GiB.", min=1)],
    image: Annotated[str | None, typer.Option(help="Fill the volume from this image.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a volume, empty or from an image."""
    body: dict[str, Any] = {"name": name, "size": size}
    if image is not None:
        body["image"] = image
    print_one(api().post("/v1/volumes", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_volumes(fmt: FormatOption = Format.table) -> None:
    """List volumes."""
    print_list(api().get("/v1/volumes"), COLUMNS, fmt)


@app.command("show")
def show(volume: Volume, fmt: FormatOption = Format.table) -> None:
    """Show one volume."""
    print_one(api().get(f"/v1/volumes/{volume}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(volume: Volume) -> None:
    """Delete a volume (it must be detached)."""
    api().delete(f"/v1/volumes/{volume}")
    typer.echo(f"volume {volume} deleted")
