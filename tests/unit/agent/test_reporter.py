"""report_node_status: what the agent tells the controller, and how it copes when nobody listens."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from dpustack.agent.credentials import ReportTokenAuth
from dpustack.agent.hardware import DriverSet
from dpustack.agent.reporter import Reporter
from dpustack.contract.node import NodeReport
from dpustack.contract.numa import HugePages, NumaCell
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver

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
    assert report["not_ready_reason"] == "the BMC cannot describe the host"


VM_1 = "6d1f0c8e-3b7a-4c55-9e0b-2a1d4f6c8b01"


def _with_host(**hypervisor) -> DriverSet:
    drivers = memory_drivers()
    return DriverSet(drivers.functions, drivers.switch, drivers.storage, drivers.bmc,
                     hypervisor=MemoryHypervisorDriver(**hypervisor))


HOST = {"cells": [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 4096},
                  {"id": 1, "cpus": [4, 5, 6], "memory_mib": 2048,
                   "hugepages": [{"size_kib": 2048, "total": 64, "free": 64}]}],
        # VM_1 is the node's own instance, counted by the controller's claims; other-vm is the host's own
        "others": [{"uuid": VM_1, "cell": 0, "memory_mib": 1024, "pinned_cpus": [1]},
                    {"uuid": "other-vm", "cell": 1, "memory_mib": 512, "pinned_cpus": [6]}]}


def test_with_a_hypervisor_the_report_carries_its_cells_and_their_totals_but_not_its_own_instances(start_agent):
    agent = start_agent(_with_host(**HOST))
    assert agent.build(uuid=VM_1).status_code == 200
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, json={}))
    reporter = Reporter(agent.service.config, agent.service.node_report, auth=_auth(agent), transport=transport)

    assert reporter.send() is True

    body = json.loads(sent[0].content)
    assert (body["ready"], body["total_cpu"], body["total_mem"]) == (True, 7, 6144)  # the cells', not the BMC's
    assert (body["used_cpu"], body["used_mem"]) == (4, 8192)  # the recorded instances', as before
    assert body["numa_cells"] == [
        {"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 4096, "used_memory_mib": 0, "pinned_cpus": [],
         "dedicated_cpus": None, "hugepages": []},
        {"id": 1, "cpus": [4, 5, 6], "memory_mib": 2048, "used_memory_mib": 512, "pinned_cpus": [6],
         "dedicated_cpus": None, "hugepages": [{"size_kib": 2048, "total": 64, "free": 64}]}]
    assert NodeReport.model_validate(body).numa_cells[1].pinned_cpus == [6]  # what the controller reads


def test_before_its_instance_is_built_the_hosts_domain_of_that_uuid_counts_as_the_hosts(start_agent):
    agent = start_agent(_with_host(**HOST))

    cells = agent.get("/v1/status").json()["numa_cells"]

    assert [(c["used_memory_mib"], c["pinned_cpus"]) for c in cells] == [(1024, [1]), (512, [6])]


def test_a_host_whose_cells_cannot_be_read_makes_the_node_not_ready_and_is_logged_once(start_agent, caplog):
    drivers = _with_host()
    agent = start_agent(drivers)
    for _ in range(2):
        drivers.hypervisor.faults.arm("topology", message="libvirtd at qemu+tls://host/system is down")

    with caplog.at_level(logging.INFO, logger="dpustack.agent.reporter"):
        first, second = agent.get("/v1/status").json(), agent.get("/v1/status").json()
        third = agent.get("/v1/status").json()

    assert [(r["ready"], r["total_cpu"], r["total_mem"], r["numa_cells"]) for r in (first, second)] == [
        (False, 0, 0, [])] * 2
    assert first["not_ready_reason"] == ("cannot read the host's NUMA cells: hypervisor.topology: libvirtd at "
                                         "qemu+tls://host/system is down")
    assert third["ready"] is True and len(third["numa_cells"]) == 2 and third["total_cpu"] == 8
    assert third["not_ready_reason"] == ""
    assert [r.message for r in caplog.records] == [
        "cannot read the host's NUMA cells: hypervisor.topology: libvirtd at qemu+tls://host/system is down "
        "(node not ready until it can)", "reading the host's NUMA cells again"]


@pytest.mark.parametrize("cells, reason", [
    ([NumaCell(id=0, cpus=[0, 1], memory_mib=1024), NumaCell(id=1, cpus=[1, 2], memory_mib=1024)],
     "the host's NUMA cells are not usable: CPU 1 is in cells 0 and 1"),
    ([NumaCell(id=0, cpus=[0], memory_mib=1024, hugepages=[HugePages(size_kib=2048, total=4, free=5)])],
     "the host's NUMA cells are not usable: cell 0: 5 free 2048 KiB pages of only 4"),
])
def test_a_host_whose_cells_make_no_host_is_not_ready_and_says_why(start_agent, cells, reason):
    drivers = _with_host()
    agent = start_agent(drivers)
    drivers.hypervisor.cells = cells  # what a broken driver might read

    report = agent.get("/v1/status").json()

    assert (report["ready"], report["numa_cells"], report["total_cpu"]) == (False, [], 0)
    assert report["not_ready_reason"] == reason


def test_a_driver_that_cannot_even_make_a_cell_leaves_the_node_not_ready_instead_of_crashing(start_agent):
    drivers = _with_host()
    agent = start_agent(drivers)
    drivers.hypervisor.topology = lambda ignore=(): [NumaCell(id=0, cpus=[0], memory_mib=-5)]

    report = agent.get("/v1/status").json()

    assert report["ready"] is False
    assert report["not_ready_reason"].startswith("the host's NUMA cells are not usable: 1 validation error")


def test_without_a_hypervisor_the_report_has_no_cells_field(built: Agent):
    assert "numa_cells" not in built.service.node_report().body()
