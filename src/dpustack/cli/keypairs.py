"""`dpustack keypair …`: the project's SSH public keys, handed to servers through the metadata service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpustack.cli.context import CliUsageError, api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one

app = typer.Typer(help="Manage SSH key pairs (public keys only) for new servers.", no_args_is_help=True)

KeyPair = Annotated[str, typer.Argument(help="Key pair name or id.")]

COLUMNS = [("ID", "id"), ("Name", "name"), ("Fingerprint", "fingerprint"), ("Created", "created_at")]
SHOW_FIELDS = fields("id", "name", "type", "fingerprint", "public_key", "project_id", "created_at")


def read_text_file(path: Path, option: str) -> str:
    """A small text file named by a command-line option, or a usage error that names the option."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliUsageError(f"{option}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise CliUsageError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the key pair (unique in the project).")],
    public_key: Annotated[Path, typer.Option(help="OpenSSH public key file, e.g. ~/.ssh/id_ed25519.pub.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Register a public key; servers created with --key-name NAME get it."""
    body = {"name": name, "public_key": read_text_file(public_key, "--public-key").strip()}
    print_one(api().post("/v1/keypairs", body), SHOW_FIELDS, fmt)


@app.command("list")
def list_keypairs(fmt: FormatOption = Format.table) -> None:
    """List key pairs."""
    print_list(api().get("/v1/keypairs"), COLUMNS, fmt)


@app.command("show")
def show(keypair: KeyPair, fmt: FormatOption = Format.table) -> None:
    """Show one key pair with its public key."""
    print_one(api().get(f"/v1/keypairs/{keypair}"), SHOW_FIELDS, fmt)


@app.command("delete")
def delete(keypair: KeyPair) -> None:
    """Delete a key pair (servers made with it keep their copy)."""
    api().delete(f"/v1/keypairs/{keypair}")
    typer.echo(f"keypair {keypair} deleted")
