"""How a CLI command gets its API client: global options, then one Client per run."""

from __future__ import annotations

from dataclasses import dataclass

import click

from dpustack.client import Client
from dpustack.errors import DpustackError


class CliUsageError(DpustackError):
    """The command line lacks something the command needs (URL, token, input file)."""

    code = "usage"


@dataclass
class Settings:
    """The global options, as given or taken from the environment."""

    url: str | None
    token: str | None


def make_client(url: str, token: str) -> Client:
    """Build the client for one CLI run (tests replace this to talk to a fake API)."""
    return Client(url, token)


def api() -> Client:
    """The client of the current command, made from the global options on first use."""
    ctx = click.get_current_context().find_root()
    client = ctx.meta.get("dpustack.client")
    if client is None:
        settings: Settings = ctx.obj
        if not settings.url:
            raise CliUsageError("no controller URL: pass --url or set DPUSTACK_URL "
                                "(for a lab: eval \"$(dpustack lab env)\")")
        if not settings.token:
            raise CliUsageError("no API token: pass --token or set DPUSTACK_TOKEN")
        client = make_client(settings.url, settings.token)
        ctx.meta["dpustack.client"] = client
        ctx.call_on_close(client.close)
    return client
