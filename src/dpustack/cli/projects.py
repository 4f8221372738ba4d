"""`dpustack project …` and `dpustack token …`: tenants and their API tokens (admin)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, fields, print_list, print_one

projects = typer.Typer(help="Manage projects (admin).", no_args_is_help=True)
tokens = typer.Typer(help="Manage API tokens (admin).", no_args_is_help=True)

PROJECT_COLUMNS = [("ID", "id"), ("Name", "name"), ("Created", "created_at")]
TOKEN_COLUMNS = [("ID", "id"), ("Name", "name"), ("Project", "project_id"), ("Role", "role"),
                 ("Created", "created_at")]


class Role(str, Enum):
    member = "member"
    admin = "admin"
    agent = "agent"


@projects.command("create")
def create_project(name: Annotated[str, typer.Argument(help="Project name.")],
                   fmt: FormatOption = Format.table) -> None:
    """Create a project."""
    print_one(api().post("/v1/projects", {"name": name}), fields("id", "name", "created_at"), fmt)


@projects.command("list")
def list_projects(fmt: FormatOption = Format.table) -> None:
    """List projects."""
    print_list(api().get("/v1/projects"), PROJECT_COLUMNS, fmt)


@tokens.command("create")
def create_token(
    project: Annotated[str, typer.Option(help="Project the token acts for (name or id).")],
    role: Annotated[Role, typer.Option(help="member, admin or agent (node reports only).")] = Role.member,
    name: Annotated[str | None, typer.Option(help="A label for the token.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a token; its secret is shown this once."""
    body: dict[str, Any] = {"project": project, "role": role.value}
    if name is not None:
        body["name"] = name
    print_one(api().post("/v1/tokens", body), fields("id", "name", "project_id", "role", "token"), fmt)


@tokens.command("list")
def list_tokens(fmt: FormatOption = Format.table) -> None:
    """List tokens (never their secrets)."""
    print_list(api().get("/v1/tokens"), TOKEN_COLUMNS, fmt)


@tokens.command("delete")
def delete_token(token_id: Annotated[str, typer.Argument(help="Token id.")]) -> None:
    """Revoke a token."""
    api().delete(f"/v1/tokens/{token_id}")
    typer.echo(f"token {token_id} deleted")
