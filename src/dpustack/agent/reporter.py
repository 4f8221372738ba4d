"""Tell the controller about this node every few seconds: its size, its use, its instances and, on a node with
a hypervisor driver, its host's NUMA cells."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Collection
from typing import Any, Callable

import httpx

from dpustack.agent.config import AgentConfig
from dpustack.agent.inventory import Inventory
from dpustack.agent.store import AgentStore, InstanceRecord
from dpustack.client import Client
from dpustack.contract.node import NodeReport, ReportedInstance
from dpustack.contract.numa import NumaCell, check_cells
from dpustack.drivers.bmc import HardwareInfo
from dpustack.drivers.hypervisor import HypervisorDriver
from dpustack.errors import DpustackError
from dpustack.instance_states import reported_status

log = logging.getLogger(__name__)


class HostCells:
    """The host's NUMA cells through the hypervisor driver; a failure to read them, or cells that make no host
    (:func:`~dpustack.contract.numa.check_cells`), is logged once, until they can be read again."""

    def __init__(self, driver: HypervisorDriver):
        self._driver = driver
        self._failing = False
        #: why the last read gave no cells, for a person; "" when it gave them
        self.problem = ""

    def read(self, ignore: Collection[str]) -> list[NumaCell] | None:
        """The cells, the domains in ``ignore`` (the node's own instances) left out of their use; None (and
        :attr:`problem` says why) if the hypervisor cannot be read or its cells are nonsense."""
        try:
            cells = check_cells(self._driver.topology(ignore=ignore))
        except DpustackError as exc:
            return self._fail(f"cannot read the host's NUMA cells: {exc.message}")
        except ValueError as exc:  # a cell no host has (a pydantic ValidationError is one too)
            return self._fail(f"the host's NUMA cells are not usable: {exc}")
        if self._failing:
            log.info("reading the host's NUMA cells again")
        self._failing, self.problem = False, ""
        return cells

    def _fail(self, problem: str) -> None:
        if not self._failing:
            log.warning("%s (node not ready until it can)", problem)
        self._failing, self.problem = True, problem[:1024]
        return None


def node_report(config: AgentConfig, store: AgentStore, hardware: HardwareInfo | None,
                ready: bool, *, inventory: Inventory | None = None, host: HostCells | None = None) -> NodeReport:
    """The node report: totals from the BMC's hardware info, usage summed over recorded instances,
    and with the inventory role the PCI fields (devices, pools, traits, DPUs); without it they are
    left out (unset). With a hypervisor driver (``host``) the report carries the host's NUMA cells, its
    instances' domains left out of their use, and the totals are the CPUs and memory the cells offer; a
    host whose cells cannot be read, or make no host, makes the node not ready, with no cells and no totals.
    A node not ready says why (``not_ready_reason``), the first of: no hardware info, the agent itself, the
    host's cells."""
    instances = store.find(InstanceRecord)
    total_cpu, total_mem = (hardware.cpu, hardware.mem) if hardware else (0, 0)
    cells: dict[str, Any] = {}
    if hardware is None:
        reason = "the BMC cannot describe the host"
    else:
        reason = "" if ready else "the agent's drivers are not validated yet or its last reconcile pass failed"
    if host is not None:
        found = host.read([r.uuid for r in instances])
        if found is None:
            reason = reason or host.problem
        cells["numa_cells"] = [cell.model_dump() for cell in found or []]  # every field, defaults too, sent
        total_cpu, total_mem = sum(len(c.cpus) for c in found or []), sum(c.memory_mib for c in found or [])
    return NodeReport(
        hostname=config.hostname,
        ready=not reason,
        **({"not_ready_reason": reason} if reason else {}),  # unset when ready: left out of the body
        node_type=config.node_type,
        dpu_model=config.dpu_model,
        total_cpu=total_cpu,
        used_cpu=sum(r.vcpus for r in instances),
        total_mem=total_mem,
        used_mem=sum(r.ram for r in instances),
        instances=[ReportedInstance(uuid=r.uuid, status=reported_status(r.status, r.power)) for r in instances],
        agent_url=config.advertise_url or "",
        **(inventory.report() if inventory is not None else {}),
        **cells,
    )


class Reporter:
    """Sends the report; an unreachable controller is logged once and retried on the next tick."""

    def __init__(self, config: AgentConfig, report: Callable[[], NodeReport], *, auth: httpx.Auth,
                 verify: ssl.SSLContext | bool = True, transport: httpx.BaseTransport | None = None):
        self._report = report
        self._client = Client(config.controller.url, auth, verify=verify,
                              timeout=min(config.report_interval, 10.0), transport=transport)
        self._failing = False

    def send(self) -> bool:
        """Send one report; True when the controller accepted it."""
        try:
            self._client.report_node(self._report())
        except DpustackError as exc:
            if not self._failing:
                log.warning("cannot report to the controller (will keep trying): %s", exc.message)
            self._failing = True
            return False
        if self._failing:
            log.info("reporting to the controller again")
        self._failing = False
        return True

    def close(self) -> None:
        self._client.close()
