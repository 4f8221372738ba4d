"""The node's hardware profile: one driver per interface, chosen by name in agent.toml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpustack.agent.config import AgentConfig
from dpustack.drivers.bmc import BmcAccess, BmcDriver
from dpustack.drivers.functions import FunctionDriver
from dpustack.drivers.inventory import InventoryDriver
from dpustack.drivers.registry import load_driver
from dpustack.drivers.storage import StorageDriver
from dpustack.drivers.switch import SwitchDriver


@dataclass(frozen=True)
class DriverSet:
    """The drivers of one node."""

    functions: FunctionDriver
    switch: SwitchDriver
    storage: StorageDriver
    bmc: BmcDriver
    inventory: InventoryDriver | None = None  # only with a [pci] section

    def validate(self) -> None:
        """Validate every driver; the first failure raises DriverError."""
        for driver in (self.functions, self.switch, self.storage, self.bmc, self.inventory):
            if driver is not None:
                driver.validate()


def load_drivers(config: AgentConfig) -> DriverSet:
    """Instantiate the drivers named in ``[drivers]``; the BMC gets ``[bmc]`` and its own table,
    the sysfs inventory driver ``[pci] root`` and ``devlink_json``."""
    names = config.drivers
    access = BmcAccess(address=config.bmc.address, username=config.bmc.username,
                       password=config.bmc.password.get_secret_value())
    bmc_options: dict[str, Any] = {}
    if names.bmc == "memory":
        bmc_options = config.bmc.memory.model_dump(exclude_none=True)
    return DriverSet(
        functions=load_driver(FunctionDriver, names.functions),
        switch=load_driver(SwitchDriver, names.switch),
        storage=load_driver(StorageDriver, names.storage),
        bmc=load_driver(BmcDriver, names.bmc, access, **bmc_options),
        inventory=_load_inventory(config),
    )


def _load_inventory(config: AgentConfig) -> InventoryDriver | None:
    if config.pci is None:
        return None
    options: dict[str, Any] = {}
    if config.drivers.inventory == "sysfs":
        options = {"root": config.pci.root, "devlink_json": config.pci.devlink_json}
    return load_driver(InventoryDriver, config.drivers.inventory, **options)
