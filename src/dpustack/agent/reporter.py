"""Tell the controller about this node every few seconds: its size, its use and its instances."""

from __future__ import annotations

import logging
import ssl
from typing import Callable

import httpx

from dpustack.agent.config import AgentConfig
from dpustack.agent.inventory import Inventory
from dpustack.agent.store import AgentStore, InstanceRecord
from dpustack.client import Client
from dpustack.contract.node import NodeReport, ReportedInstance
from dpustack.drivers.bmc import HardwareInfo
from dpustack.errors import DpustackError
from dpustack.instance_states import reported_status

log = logging.getLogger(__name__)


def node_report(config: AgentConfig, store: AgentStore, hardware: HardwareInfo | None,
                ready: bool, *, inventory: Inventory | None = None) -> NodeReport:
    """The node report: totals from the BMC's hardware info, usage summed over recorded instances,
    and with the inventory role the PCI fields (devices, pools, traits, DPUs); without it they are
    left out (unset)."""
    instances = store.find(InstanceRecord)
    return NodeReport(
        hostname=config.hostname,
        ready=ready and hardware is not None,
        node_type=config.node_type,
        dpu_model=config.dpu_model,
        total_cpu=hardware.cpu if hardware else 0,
        used_cpu=sum(r.vcpus for r in instances),
        total_mem=hardware.mem if hardware else 0,
        used_mem=sum(r.ram for r in instances),
        instances=[ReportedInstance(uuid=r.uuid, status=reported_status(r.status, r.power)) for r in instances],
        agent_url=config.advertise_url or "",
        **(inventory.report() if inventory is not None else {}),
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
