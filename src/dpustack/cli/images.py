"""`dpustack image …`: boot images, uploaded from a local file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dpustack.cli.context import CliUsageError, api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one, stdout
from dpustack.cli.progress import WaitOption, follow
from dpustack.errors import DpustackError

app = typer.Typer(help="Manage images (boot disks for servers).", no_args_is_help=True)

Image = Annotated[str, typer.Argument(help="Image name or id.")]
COLUMNS = [("ID", "id"), ("Name", "name"), ("Status", "status"), ("Format", "disk_format"), ("Size", "size"),
           ("Visibility", "visibility")]
SHOW_FIELDS = fields("id", "name", "status", "disk_format", "size", "virtual_size", "checksum", "visibility",
                     "project_id", "created_at")


class DiskFormat(str, Enum):
    raw = "raw"
    qcow2 = "qcow2"


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Image name.")],
    file: Annotated[Path, typer.Option(help="Local file to upload as the image content.")],
    disk_format: Annotated[DiskFormat, typer.Option(
        help="Format of the file; the controller checks it with qemu-img.")] = DiskFormat.raw,
    public: Annotated[bool, typer.Option("--public", help="Visible to every project.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Create an image and upload its content; if the upload is refused, no image is left behind."""
    if not file.is_file():
        raise CliUsageError(f"no such file: {file}")
    client = api()
    image = client.post("/v1/images", {"name": name, "visibility": "public" if public else "private",
                                       "disk_format": disk_format.value})
    try:
        uploaded = client.upload_image(image["id"], file)
    except DpustackError:
        client.delete(f"/v1/images/{image['id']}")  # the image stays queued otherwise, holding its name
        raise
    print_one(uploaded, SHOW_FIELDS, fmt)


@app.command("list")
def list_images(fmt: FormatOption = Format.table) -> None:
    """List images."""
    print_list(api().get("/v1/images"), COLUMNS, fmt)


@app.command("show")
def show(image: Image, fmt: FormatOption = Format.table) -> None:
    """Show one image."""
    print_one(api().get(f"/v1/images/{image}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(image: Image, wait: WaitOption = False) -> None:
    """Delete an image; volumes made from it are first flattened (an operation) so they keep its data."""
    label = f"delete image {image}"
    operation = api().delete(f"/v1/images/{image}")
    if operation is None:  # no volume shared it: gone at once
        typer.echo(f"image {image} deleted")
    elif follow(operation, wait, label) is not None:
        stdout().print(f"{label}: volumes flattened, image deleted", highlight=False, markup=False)
