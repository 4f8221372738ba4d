"""One agent process: its parts put together, and its background loops."""

from __future__ import annotations

import logging
import threading

from dpustack.agent.compute import Compute
from dpustack.agent.instance_steps import InstanceSteps
from dpustack.agent.live_moves import LiveMoves
from dpustack.agent.consoles import Consoles
from dpustack.agent.config import AgentConfig
from dpustack.agent.credentials import AgentCredentials, ReportTokenAuth
from dpustack.agent.hardware import DriverSet, load_drivers
from dpustack.agent.instance_runtime import BareMetalRuntime, InstanceRuntime, VmRuntime
from dpustack.agent.inventory import Inventory
from dpustack.agent.metadata_proxy import ControllerForward, MetadataProxies
from dpustack.agent.periodic import Periodic
from dpustack.agent.reconciler import Orphans, Reconciler
from dpustack.agent.reporter import HostCells, Reporter, node_report
from dpustack.agent.standalone_devices import StandaloneDevices
from dpustack.agent.store import AgentStore, InstanceRecord
from dpustack.agent.wiring import Wiring
from dpustack.contract.node import NodeReport, NodeStatus
from dpustack.drivers.bmc import HardwareInfo
from dpustack.errors import DpustackError
from dpustack.instance_states import PowerState
from dpustack.tls import client_context

log = logging.getLogger(__name__)


class AgentService:
    """Config, store, drivers, roles and loops of one agent process.

    One lock serializes every change to the node (API actions and reconcile
    passes), so a pass never sees an action half-done.
    """

    def __init__(self, config: AgentConfig, drivers: DriverSet | None = None):
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.drivers = drivers or load_drivers(config)
        self.store = AgentStore(config.state_dir / "agent.db")
        self.credentials = AgentCredentials(config.state_dir / "credentials.json",
                                            config.controller.token.get_secret_value(),
                                            config.api.controller_credential_sha256)
        to_controller = {"auth": ReportTokenAuth(self.credentials),
                         "verify": client_context(config.controller.ca_file, field="controller.ca_file")}
        self.lock = threading.RLock()
        wiring = Wiring(self.store, self.drivers)
        runtime: InstanceRuntime = (
            VmRuntime(self.drivers.hypervisor, stop_timeout=config.vm_stop_timeout)
            if self.drivers.hypervisor is not None else BareMetalRuntime(self.drivers.bmc))
        self._forward: ControllerForward | None = None
        self.metadata: MetadataProxies | None = None
        if config.metadata.enabled:
            self._forward = ControllerForward(config.controller.url, config.metadata.timeout, **to_controller)
            self.metadata = MetadataProxies(config.metadata, self.drivers.switch, config.bridge, self._forward)
        self.consoles = Consoles(config.state_dir / "consoles", runtime)
        self.inventory: Inventory | None = None
        if config.pci is not None and self.drivers.inventory is not None:
            self.inventory = Inventory(self.drivers.inventory, config.pci, config.hostname)
        inventory = self.inventory
        representor = (lambda pf_mac, vf_num: inventory.representor(pf_mac, vf_num).netdev) if inventory else None
        self.compute = Compute(self.store, runtime, wiring, bridge=config.bridge, lock=self.lock,
                               consoles=self.consoles, metadata=self.metadata, representor=representor)
        self.live = LiveMoves(self.store, runtime, InstanceSteps(self.store, wiring, bridge=config.bridge,
                                                                 metadata=self.metadata, representor=representor),
                              self.compute, lock=self.lock)
        self.devices = StandaloneDevices(self.store, self.drivers, wiring, lock=self.lock)
        self.reconciler = Reconciler(self.store, self.drivers, wiring, runtime, lock=self.lock)
        self.host_cells = HostCells(self.drivers.hypervisor) if self.drivers.hypervisor is not None else None
        self._reporter = Reporter(config, self.node_report, **to_controller)
        self._validated = False
        self._hardware: HardwareInfo | None = None
        self._loops: list[Periodic] = []

    def start(self, *, background: bool = True) -> None:
        """Validate and reconcile once (rebuilding after a SoC reboot), then start the loops."""
        self.converge()
        if background:
            self._loops = [
                Periodic("reconciler", self.config.reconcile_interval, self.converge, run_first=False),
                Periodic("reporter", self.config.report_interval, self._reporter.send),
            ]
            for loop in self._loops:
                loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop()
        self.consoles.close_all()
        if self.metadata is not None:
            self.metadata.close()
        if self._forward is not None:
            self._forward.close()
        self._reporter.close()
        self.drivers.close()
        self.store.close()

    def converge(self) -> None:
        """Validate the drivers until they pass once, read the host's hardware, refresh the PCI
        inventory, reconcile."""
        if not self._validated:
            try:
                self.drivers.validate()
                self._validated = True
            except DpustackError as exc:
                log.error("drivers do not validate, node not ready: %s", exc.message)
                return
        if self._hardware is None:
            try:
                self._hardware = self.drivers.bmc.hw_info()
            except DpustackError as exc:
                log.error("cannot read the host's hardware from the BMC: %s", exc.message)
        if self.inventory is not None:
            self.inventory.refresh()
        self.reconciler.run()
        with self.lock:
            self.consoles.sync(record.uuid for record in self.store.find(InstanceRecord))
            for change in self.compute.sync_metadata():
                log.info("metadata: %s", change)

    def power_host(self, target: PowerState) -> PowerState:
        """The BMC API's power_on/power_off: switch the host, then read its instances' power back."""
        bmc = self.drivers.bmc
        with self.lock:
            if target == "on":
                bmc.power_on()
            else:
                bmc.power_off()
            state = bmc.power_state()
            self.compute.follow_power()
            return state

    @property
    def ready(self) -> bool:
        """Drivers validated, hardware known and the latest reconcile pass converged."""
        last = self.reconciler.last
        return self._validated and self._hardware is not None and last is not None and last.ok

    def node_report(self) -> NodeReport:
        return node_report(self.config, self.store, self._hardware, self.ready, inventory=self.inventory,
                           host=self.host_cells)

    def status(self) -> NodeStatus:
        """The node report plus the orphans the last reconcile pass found."""
        last = self.reconciler.last
        return NodeStatus.model_validate({**self.node_report().model_dump(),
                                          "orphans": (last.orphans if last else Orphans()).as_dict()})
