"""report_node_status: what the agent tells the controller, and how it copes when nobody listens."""

from __future__ import annotations

import json
import logging

import httpx

from dpustack.agent.credentials import ReportTokenAuth
from dpustack.agent.reporter import Reporter

from .conftest import Agent, memory_drivers


def _auth(agent: Agent) -> ReportTokenAuth:
    return ReportTokenAuth(agent.service.credentials)


def test_the_report_carries_bmc_totals_and_the_usage_of_recorded_instances(built: Agent):
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, json={}))
    reporter = Reporter(built.service.config, built.service.node_report, auth=_auth(built), transport=transport)

    assert reporter.send() is True

    [request] = sent
    assert request.url.path == "/v1/nodes/report"
    assert request.headers["Authorization"] == "Bearer agent-role-token"
    assert json.loads(request.content) == {
        "hostname": "dpu-node-1", "ready": True, "node_type": "bm", "dpu_model": "BF2",
        "total_cpu": 64, "used_cpu": 4, "total_mem": 262144, "used_mem": 8192,
        "instances": [{"uuid": "inst-1", "status": "up"}], "agent_url": "http://127.0.0.1:8801"}


def test_an_unreachable_controller_is_a_warning_once_and_a_retry_next_tick(agent: Agent, caplog):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    reporter = Reporter(agent.service.config, agent.service.node_report, auth=_auth(agent),
                        transport=httpx.MockTransport(refuse))

    with caplog.at_level(logging.WARNING, logger="dpustack.agent.reporter"):
        assert reporter.send() is False
        assert reporter.send() is False

    assert [r.message for r in caplog.records].count(
        "cannot report to the controller (will keep trying): cannot reach http://127.0.0.1:9: "
        "connection refused") == 1


def test_a_controller_error_answer_is_survived_too(agent: Agent):
    transport = httpx.MockTransport(lambda request: httpx.Response(
        403, json={"error": {"code": "forbidden", "message": "agents only"}}))
    reporter = Reporter(agent.service.config, agent.service.node_report, auth=_auth(agent), transport=transport)

    assert reporter.send() is False


def test_a_node_whose_bmc_cannot_describe_the_host_is_not_ready(start_agent):
    drivers = memory_drivers()
    drivers.bmc.faults.arm("hw_info")

    agent = start_agent(drivers)

    report = agent.get("/v1/status").json()
    assert report["ready"] is False and report["total_cpu"] == 0
