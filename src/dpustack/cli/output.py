"""Printing API objects: Rich tables for people, JSON (stable, sorted keys) for scripts."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Callable, Sequence

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

Getter = Callable[[dict[str, Any]], Any]
Column = tuple[str, str | Getter]


class Format(str, Enum):
    table = "table"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


PIPE_WIDTH = 250  # when stdout is not a terminal, do not fold tables at 80 columns


def stdout() -> Console:
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def cell(value: Any) -> str:
    """One value as table text (plain, never markup): lists joined, None as '-', times shortened."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, str) and _looks_like_time(value):
        return value.replace("T", " ")[:19]
    return str(value)


def _looks_like_time(value: str) -> bool:
    return len(value) >= 19 and value[4] == "-" and value[10] == "T"


def fields(*keys: str) -> list[Column]:
    """`show` rows labelled with the API's own field names, so the table matches `-f json`."""
    return [(key, key) for key in keys]


def one_per_line(key: str) -> Getter:
    """A `show` getter for a dict field (extra specs, a PCI flavor's spec): one `KEY=VALUE` a line.

    Unlike `cell`'s comma-joined form, values that contain commas stay readable.
    """
    return lambda obj: "\n".join(f"{k}={cell(v)}" for k, v in (obj.get(key) or {}).items()) or None


def _get(obj: dict[str, Any], key: str | Getter) -> Any:
    return key(obj) if callable(key) else obj.get(key)


def print_list(items: Sequence[dict[str, Any]], columns: Sequence[Column], fmt: Format,
               *, title: str | None = None) -> None:
    """Print a listing: the API objects as JSON, or chosen columns as a table."""
    if fmt is Format.json:
        print_json(list(items))
        return
    table = Table(title=title, title_justify="left")
    for header, _ in columns:
        # Ids are copied by hand: keep them whole and let other columns wrap instead.
        table.add_column(header, overflow="fold", no_wrap=header == "ID")
    for item in items:
        table.add_row(*(Text(cell(_get(item, key))) for _, key in columns))
    stdout().print(table)


def print_one(obj: dict[str, Any], fields: Sequence[Column], fmt: Format) -> None:
    """Print one object: as JSON, or a two-column field/value table."""
    if fmt is Format.json:
        print_json(obj)
        return
    table = Table(show_header=True)
    table.add_column("Field", style="bold")
    table.add_column("Value", overflow="fold")
    for label, key in fields:
        table.add_row(label, Text(cell(_get(obj, key))))
    stdout().print(table)


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp; one without a zone is UTC."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def duration(start: str | None, end: str | None) -> str:
    """Seconds between two API timestamps, or '-' when one is missing."""
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return "-"
    return f"{(ended - began).total_seconds():.2f}s"
