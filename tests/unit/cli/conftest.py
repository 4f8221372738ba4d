"""Run the real `dpustack` Typer app against the in-memory FakeApi."""

from __future__ import annotations

import os
import sys

import httpx
import pytest
from typer.testing import CliRunner, Result

from dpustack.cli import context
from dpustack.cli.main import app
from dpustack.client import Client

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # `import cli_fake_api` must work in any --import-mode
    sys.path.insert(0, _HERE)
from cli_fake_api import FakeApi, Invoke  # noqa: E402


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi()
    monkeypatch.setattr(context, "make_client",
                        lambda url, token: Client(url, token, transport=httpx.MockTransport(api)))
    monkeypatch.setattr("dpustack.client.time.sleep", lambda _: None)
    return api


@pytest.fixture
def dpustack(fake: FakeApi) -> Invoke:
    """`dpustack(*args)` runs the CLI with a URL and token set, returning click's Result; `input` is what
    it reads on standard input (answers to prompts, or a --password-stdin line)."""

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        environment = {"DPUSTACK_URL": "http://controller.test", "DPUSTACK_TOKEN": "t0ken", "COLUMNS": "200",
                       **(env or {})}
        return CliRunner().invoke(app, list(args), env=environment, input=input)

    return invoke
