"""The agent's console API: a built instance's serial console over a WebSocket, and its log."""

from __future__ import annotations

import pytest
from starlette.testclient import WebSocketDenialResponse

from .conftest import API_TOKEN, Agent

STREAM = "/v1/instances/inst-1/console/stream"


def _headers(token: str = API_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_console_stream_carries_the_hosts_output_and_what_is_typed(built: Agent):
    serial = built.driver("bmc").serial
    with built.client.websocket_connect(STREAM, headers=_headers()) as console:
        serial.emit(b"web-1 login: ")
        assert console.receive_bytes() == b"web-1 login: "
        console.send_bytes(b"root\r")
        assert console.receive_bytes() == b"root\r"  # the pretend port echoes

    log = built.get("/v1/instances/inst-1/console/log")
    assert log.status_code == 200
    assert log.headers["content-type"] == "application/octet-stream"
    assert log.content == b"web-1 login: root\r"
    assert built.get("/v1/instances/inst-1/console/log?limit=5").content == b"root\r"


def test_two_users_share_one_console(built: Agent):
    serial = built.driver("bmc").serial
    with built.client.websocket_connect(STREAM, headers=_headers()) as first, \
            built.client.websocket_connect(STREAM, headers=_headers()) as second:
        serial.emit(b"boot\n")
        assert (first.receive_bytes(), second.receive_bytes()) == (b"boot\n", b"boot\n")


@pytest.mark.parametrize(("token", "path", "status", "field"), [
    ("wrong", STREAM, 401, None),
    (API_TOKEN, "/v1/instances/inst-9/console/stream", 404, "uuid"),
])
def test_a_console_handshake_is_refused_with_an_error_answer(built: Agent, token: str, path: str, status: int,
                                                             field: str | None):
    with pytest.raises(WebSocketDenialResponse) as refused:
        with built.client.websocket_connect(path, headers=_headers(token)):
            pass
    assert refused.value.status_code == status
    assert refused.value.json()["error"].get("field") == field


def test_the_console_log_needs_the_controller_credential_and_a_known_instance(built: Agent):
    assert built.call("GET", "/v1/instances/inst-1/console/log", token="wrong").status_code == 401
    missing = built.get("/v1/instances/inst-9/console/log")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "uuid"
    assert built.get("/v1/instances/inst-1/console/log?limit=-1").status_code == 400


def test_deleting_the_instance_removes_its_console_log(built: Agent):
    built.driver("bmc").serial.emit(b"bye\n")
    assert built.delete("/v1/instances/inst-1").status_code == 200
    assert built.get("/v1/instances/inst-1/console/log").status_code == 404
