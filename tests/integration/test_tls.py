"""TLS between the controller and the agents, with real servers on loopback: each side refuses a peer whose
certificate does not verify, and an agent cannot answer for another node."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn

from dpustack.agent.app import create_app as create_agent_app
from dpustack.agent.config import parse_config
from dpustack.agent.credentials import ReportTokenAuth
from dpustack.secrets import digest
from dpustack.agent.reporter import Reporter
from dpustack.api.app import create_app as create_controller_app
from dpustack.client import Client
from dpustack.api import main as controller_main
from dpustack.controller.agent_client import AgentClient
from dpustack.controller.assembly import assemble_controller
from dpustack.controller.settings import Settings
from dpustack.errors import NodeUnreachable
from dpustack.lab.pki import Issued, LabCa
from dpustack.tls import client_context

CREDENTIAL = "the-controller-credential-for-dpu-bm-1"


@contextmanager
def serving(app: Any, port: int, cert: Issued) -> Iterator[str]:
    """Serve `app` over TLS on 127.0.0.1:`port` in a thread; yield its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ssl_certfile=str(cert.cert_file), ssl_keyfile=str(cert.key_file)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the TLS server did not start"
        time.sleep(0.05)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def cas(tmp_path: Path) -> tuple[LabCa, LabCa]:
    """The site's CA and a rogue one."""
    return LabCa(tmp_path / "ca"), LabCa(tmp_path / "rogue", name="not the site CA")


def _agent_config(tmp_path: Path, ca: LabCa, cert: Issued, controller_url: str, report_token: str = "t" * 20,
                  controller_digest: str = digest(CREDENTIAL)):
    return parse_config({
        "hostname": "dpu-bm-1", "state_dir": str(tmp_path / "agent"), "advertise_url": "https://127.0.0.1:1",
        "controller": {"url": controller_url, "token": report_token, "ca_file": str(ca.ca_file)},
        "api": {"controller_credential_sha256": controller_digest},
        "tls": {"cert_file": str(cert.cert_file), "key_file": str(cert.key_file)},
    })


def test_the_controller_refuses_an_agent_whose_certificate_does_not_verify_or_names_another_node(
        tmp_path, cas, free_port):
    site, rogue = cas
    agent_cert = site.issue("dpu-bm-1")
    app = create_agent_app(_agent_config(tmp_path, site, agent_cert, "https://127.0.0.1:9"), start_background=False)
    verify = client_context(site.ca_file)
    with serving(app, free_port(), agent_cert) as url:
        with AgentClient("dpu-bm-1", url, CREDENTIAL, timeout=10, verify=verify) as agent:
            assert agent.status().hostname == "dpu-bm-1"
        # the agent of dpu-bm-1 cannot answer for dpu-bm-2: its certificate names dpu-bm-1 only
        with AgentClient("dpu-bm-2", url, CREDENTIAL, timeout=10, verify=verify) as agent:
            with pytest.raises(NodeUnreachable, match="certificate verify failed"):
                agent.status()
    rogue_cert = rogue.issue("dpu-bm-1")
    app = create_agent_app(_agent_config(tmp_path, site, rogue_cert, "https://127.0.0.1:9"), start_background=False)
    with serving(app, free_port(), rogue_cert) as url:
        with AgentClient("dpu-bm-1", url, CREDENTIAL, timeout=10, verify=verify) as agent:
            with pytest.raises(NodeUnreachable, match="certificate verify failed"):
                agent.status()


def test_plain_http_to_an_agent_is_refused_unless_the_controller_is_insecure():
    with AgentClient("dpu-bm-1", "http://127.0.0.1:9", CREDENTIAL, timeout=1) as agent:
        with pytest.raises(NodeUnreachable, match="refusing plain http"):
            agent.status()


def test_an_agent_reports_over_verified_tls_and_refuses_a_controller_it_cannot_verify(tmp_path, cas, free_port,
                                                                                     caplog):
    site, rogue = cas
    settings = Settings(home=tmp_path / "controller", tls_cert=None, tls_key=None, agent_ca=site.ca_file)
    controller = create_controller_app(assemble_controller(settings), run_workers=False)
    admin = (settings.home / "admin-token").read_text().strip()
    for ca, should_join in ((site, True), (rogue, False)):
        cert = ca.issue("controller")
        with serving(controller, free_port(), cert) as url:
            with Client(url, admin, verify=client_context(site.ca_file)) as client:
                hostname = "dpu-bm-1" if should_join else "dpu-bm-2"
                enrolled = client.post("/v1/nodes", {"hostname": hostname}) if should_join else None
            token = enrolled["report_token"] if enrolled else "x" * 20
            config = _agent_config(tmp_path, site, site.issue("dpu-bm-1"), url, report_token=token)
            agent = create_agent_app(config, start_background=False)
            reporter = Reporter(config, agent.state.service.node_report,
                                auth=ReportTokenAuth(agent.state.service.credentials),
                                verify=client_context(site.ca_file))
            with caplog.at_level(logging.WARNING, logger="dpustack.agent.reporter"):
                assert reporter.send() is should_join
            reporter.close()
            if should_join:
                with Client(url, admin, verify=client_context(site.ca_file)) as client:
                    assert client.get("/v1/nodes/dpu-bm-1")["joined_at"] is not None
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_the_controller_will_not_serve_plain_http_unless_told_insecure(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("DPUSTACK_HOME", str(tmp_path))
    for name in ("DPUSTACK_TLS_CERT", "DPUSTACK_TLS_KEY", "DPUSTACK_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as stopped:
        controller_main.main(["--bind", "127.0.0.1:9"])
    assert stopped.value.code == 2
    assert "DPUSTACK_TLS_CERT" in capsys.readouterr().err

    started: dict[str, Any] = {}
    monkeypatch.setattr(controller_main.uvicorn, "run", lambda app, **kwargs: started.update(kwargs))
    monkeypatch.setenv("DPUSTACK_INSECURE", "true")
    with caplog.at_level(logging.WARNING, logger="dpustack.controller"):
        controller_main.main(["--bind", "127.0.0.1:9"])
    assert started["port"] == 9 and "ssl_certfile" not in started
    assert "plain HTTP is allowed" in caplog.text
