"""`dpustack volume …`: block volumes served to servers through DPU storage functions, and their snapshots.

Creating, extending and flattening a volume and taking or deleting a snapshot are operations:
`--wait` follows one to its end (as `server create --wait` does) and then shows the result.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one, stderr, stdout
from dpustack.cli.progress import WaitOption, follow

app = typer.Typer(help="Manage volumes and their snapshots.", no_args_is_help=True)
snapshots = typer.Typer(help="Take, list, show and delete snapshots of volumes.", no_args_is_help=True)
app.add_typer(snapshots, name="snapshot")

Volume = Annotated[str, typer.Argument(help="Volume name or id.")]
Snapshot = Annotated[str, typer.Argument(help="Snapshot name or id.")]


def _fault(obj: dict[str, Any]) -> str | None:
    fault = obj.get("fault")
    return f"{fault['message']} (step {fault.get('step')}, operation {fault.get('operation_id')})" if fault else None


def _server(volume: dict[str, Any]) -> str | None:
    return ", ".join(a.get("server") or a["server_id"] for a in volume.get("attachments") or []) or None


COLUMNS = [("ID", "id"), ("Name", "name"), ("Size GiB", "size"), ("Status", "status"), ("Server", _server),
           ("Bootable", "bootable")]
SHOW_FIELDS = [*fields("id", "name", "size", "status"), ("fault", _fault),
               *fields("bootable", "image_id", "snapshot_id", "instance_id", "operation_id", "project_id",
                       "created_at")]
ATTACHMENT_COLUMNS = [("Server", lambda a: a.get("server") or a["server_id"]), ("Node", "node"),
                      ("Function", "function_id"), ("BDF", "bdf"), ("Attachment", "id")]
SNAPSHOT_COLUMNS = [("ID", "id"), ("Name", "name"), ("Volume", "volume_id"), ("Size GiB", "size"),
                    ("Status", "status"), ("Node", "node")]
SNAPSHOT_FIELDS = [*fields("id", "name", "volume_id", "size", "status"), ("fault", _fault),
                   *fields("instance_id", "node", "operation_id", "project_id", "created_at")]


def _print_volume(volume: dict[str, Any], fmt: Format) -> None:
    print_one(volume, SHOW_FIELDS, fmt)
    if fmt is Format.table and volume.get("attachments"):
        print_list(volume["attachments"], ATTACHMENT_COLUMNS, fmt, title="Attachments")


def _created(made: dict[str, Any], kind: str, path: str, wait: bool, fmt: Format) -> None:
    """A new volume or snapshot: shown at once (`creating`), or once its operation succeeded."""
    client = api()
    if wait:
        follow(client.operation(made["operation_id"]), True, f"create {kind} {made['name']}")
        made = client.get(f"{path}/{made['id']}")
    else:
        stderr().print(f"{kind} {made['name']} is {made['status']}: operation {made['operation_id']} "
                       f"(follow it with: dpustack operation show {made['operation_id']})", markup=False)
    if kind == "volume":
        _print_volume(made, fmt)
    else:
        print_one(made, SNAPSHOT_FIELDS, fmt)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Volume name.")],
    size: Annotated[int | None, typer.Option(
        help="Size in GiB (needed for an empty volume; default: the snapshot's size, or the image's disk).",
        min=1)] = None,
    image: Annotated[str | None, typer.Option(help="Make it copy-on-write from this image.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Make it copy-on-write from this snapshot.")] = None,
    wait: WaitOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a volume: empty, or from an image or a snapshot."""
    body: dict[str, Any] = {"name": name}
    for key, value in (("size", size), ("image", image), ("snapshot", snapshot)):
        if value is not None:
            body[key] = value
    _created(api().post("/v1/volumes", body), "volume", "/v1/volumes", wait, fmt)


@app.command("list")
def list_volumes(fmt: FormatOption = Format.table) -> None:
    """List volumes."""
    print_list(api().get("/v1/volumes"), COLUMNS, fmt)


@app.command("show")
def show(volume: Volume, fmt: FormatOption = Format.table) -> None:
    """Show one volume, with where it is attached: server, node, storage function and its BDF."""
    _print_volume(api().get(f"/v1/volumes/{volume}"), fmt)


@app.command("delete")
def delete(volume: Volume) -> None:
    """Delete a volume (it must be detached and have no snapshots)."""
    api().delete(f"/v1/volumes/{volume}")
    typer.echo(f"volume {volume} deleted")


def _changed(volume: str, path: str, label: str, wait: bool, fmt: Format, body: dict[str, Any] | None = None) -> None:
    client = api()
    if follow(client.post(f"/v1/volumes/{volume}/{path}", body), wait, label) is not None:
        _print_volume(client.get(f"/v1/volumes/{volume}"), fmt)


@app.command("extend")
def extend(
    volume: Volume,
    size: Annotated[int, typer.Option(help="The new size in GiB, larger than the volume's.", min=1)],
    wait: WaitOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Grow a volume, attached or not."""
    _changed(volume, "extend", f"extend {volume}", wait, fmt, {"size": size})


@app.command("flatten")
def flatten(volume: Volume, wait: WaitOption = False, fmt: FormatOption = Format.table) -> None:
    """Copy into a volume the data it shares with its image or snapshot, so that they can be deleted."""
    _changed(volume, "flatten", f"flatten {volume}", wait, fmt)


# -- snapshots ---------------------------------------------------------------------------
@snapshots.command("create")
def create_snapshot(
    volume: Volume,
    name: Annotated[str, typer.Argument(help="Snapshot name.")],
    wait: WaitOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Take a snapshot of a volume; of an attached one it is taken live, while its server writes."""
    _created(api().post(f"/v1/volumes/{volume}/snapshots", {"name": name}), "snapshot", "/v1/snapshots", wait, fmt)


@snapshots.command("list")
def list_snapshots(
    volume: Annotated[str | None, typer.Option(help="Only the snapshots of this volume.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List snapshots."""
    print_list(api().get(f"/v1/volumes/{volume}/snapshots" if volume else "/v1/snapshots"), SNAPSHOT_COLUMNS, fmt)


@snapshots.command("show")
def show_snapshot(snapshot: Snapshot, fmt: FormatOption = Format.table) -> None:
    """Show one snapshot."""
    print_one(api().get(f"/v1/snapshots/{snapshot}"), SNAPSHOT_FIELDS, fmt)


@snapshots.command("delete")
def delete_snapshot(snapshot: Snapshot, wait: WaitOption = False) -> None:
    """Delete a snapshot (no volume may still share its data: flatten or delete those first)."""
    label = f"delete snapshot {snapshot}"
    if follow(api().delete(f"/v1/snapshots/{snapshot}"), wait, label) is not None:
        stdout().print(f"{label}: snapshot deleted", highlight=False, markup=False)
