"""How a CLI command gets its API client: the global options, then one Client per run."""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass, field

from dpustack.client import Client
from dpustack.tls import client_context
from dpustack.errors import DpustackError


class CliUsageError(DpustackError):
    """The command line lacks something the command needs (URL, token, input file)."""

    code = "usage"


@dataclass
class Session:
    """The global options of this run, and the client made from them on first use."""

    url: str | None
    token: str | None
    client: Client | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


_session: ContextVar[Session] = ContextVar("dpustack_cli_session")


CA_ENV = "DPUSTACK_CACERT"


def make_client(url: str, token: str) -> Client:
    """Build the client for one CLI run (tests replace this to talk to a fake API). The controller's
    certificate is verified against $DPUSTACK_CACERT when set, else the system's CAs."""
    return Client(url, token, verify=client_context(os.environ.get(CA_ENV) or None, field=CA_ENV))


def begin(url: str | None, token: str | None) -> Session:
    """Record the global options for the commands of this run."""
    session = Session(url, token)
    _session.set(session)
    return session


def api() -> Client:
    """The client of the current run, made from the global options on first use."""
    session = _session.get()
    if session.client is None:
        if not session.url:
            raise CliUsageError("no controller URL: pass --url or set DPUSTACK_URL "
                                "(for a lab: eval \"$(dpustack lab env)\")")
        if not session.token:
            raise CliUsageError("no API token: pass --token or set DPUSTACK_TOKEN")
        session.client = make_client(session.url, session.token)
    return session.client
