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


#: BMC implementation -> the [bmc.*] tables its constructor takes as keyword options
BMC_OPTION_TABLES: dict[str, tuple[str, ...]] = {
    "memory": ("memory",),
    "redfish": ("redfish", "host"),
    "ipmi": ("ipmi", "host"),
}


def load_drivers(config: AgentConfig) -> DriverSet:
    """Instantiate the drivers named in ``[drivers]``; the BMC gets ``[bmc]`` and its own tables
    (``BMC_OPTION_TABLES``), the sysfs inventory driver ``[pci] root`` and ``devlink_json``."""
    names = config.drivers
    return DriverSet(
        functions=load_driver(FunctionDriver, names.functions),
        switch=load_driver(SwitchDriver, names.switch),
        storage=load_driver(StorageDriver, names.storage),
        bmc=_load_bmc(config),
        inventory=_load_inventory(config),
    )


def _load_bmc(config: AgentConfig) -> BmcDriver:
    section = config.bmc
    access = BmcAccess(address=section.address, username=section.username,
                       password=section.login_password.get_secret_value())
    options: dict[str, Any] = {}
    for table in BMC_OPTION_TABLES.get(config.drivers.bmc, ()):
        options.update(getattr(section, table).model_dump(exclude_none=True))
    return load_driver(BmcDriver, config.drivers.bmc, access, **options)


def _load_inventory(config: AgentConfig) -> InventoryDriver | None:
    if config.pci is None:
        return None
    options: dict[str, Any] = {}
    if config.drivers.inventory == "sysfs":
        options = {"root": config.pci.root, "devlink_json": config.pci.devlink_json}
    return load_driver(InventoryDriver, config.drivers.inventory, **options)
