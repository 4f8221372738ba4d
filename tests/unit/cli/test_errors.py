"""Errors: `error: <message>` on stderr, non-zero exit, never a traceback."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from cli_fake_api import FakeApi, Invoke
from dpustack.cli import context
from dpustack.cli.main import app
from dpustack.client import Client


def test_api_error_prints_message_and_field(dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("server", "show", "web9")
    assert result.exit_code == 1
    assert "error: instance 'web9' not found (field: instance)" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_url_tells_how_to_set_it(fake: FakeApi) -> None:
    result = CliRunner().invoke(app, ["node", "list"], env={"DPUSTACK_URL": "", "DPUSTACK_TOKEN": ""})
    assert result.exit_code == 1
    assert "error: no controller URL" in result.stderr
    assert "DPUSTACK_URL" in result.stderr


def test_global_options_override_the_environment(fake: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(context, "make_client", lambda url, token: (
        seen.append((url, token)) or Client(url, token, transport=httpx.MockTransport(fake))))
    result = CliRunner().invoke(app, ["--url", "http://other:1", "--token", "tk", "flavor", "list"],
                                env={"DPUSTACK_URL": "http://env:2", "DPUSTACK_TOKEN": "env"})
    assert result.exit_code == 0, result.output
    assert seen == [("http://other:1", "tk")]


def test_unreachable_controller_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(context, "make_client",
                        lambda url, token: Client(url, token, transport=httpx.MockTransport(refuse)))
    result = CliRunner().invoke(app, ["server", "list"], env={"DPUSTACK_URL": "http://127.0.0.1:9",
                                                             "DPUSTACK_TOKEN": "t"})
    assert result.exit_code == 1
    assert "error: cannot reach http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.output


def test_add_nic_needs_exactly_one_of_network_or_port(dpustack: Invoke) -> None:
    result = dpustack("server", "add-nic", "web1")
    assert result.exit_code == 2
    assert "--network or --port" in result.output
