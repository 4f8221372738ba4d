"""The node's hardware profile: one driver per interface, chosen by name in agent.toml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from dpustack.agent.config import AgentConfig
from dpustack.drivers.base import Driver
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

    def all(self) -> list[Driver]:
        """Every driver of the node, the inventory driver only when there is one."""
        return [d for d in (self.functions, self.switch, self.storage, self.bmc, self.inventory) if d is not None]

    def validate(self) -> None:
        """Validate every driver; the first failure raises DriverError."""
        for driver in self.all():
            driver.validate()

    def close(self) -> None:
        """Release what drivers hold open (the ovs driver's OVSDB connection); a later call reopens it."""
        for driver in self.all():
            close = getattr(driver, "close", None)
            if callable(close):
                close()


#: interface -> implementation -> where in agent.toml its constructor's keyword options are: a table
#: (``bmc.redfish``) gives every field that is set, a single option (``pci.root``) just itself.
#: Implementations not listed (the memory drivers but the BMC) take no options.
OPTION_TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "functions": {"lab": ("functions.lab",)},
    "switch": {"ovs": ("switch.ovs",)},
    "storage": {},
    "bmc": {"memory": ("bmc.memory",), "redfish": ("bmc.redfish", "bmc.host"), "ipmi": ("bmc.ipmi", "bmc.host")},
    "inventory": {"sysfs": ("pci.root", "pci.devlink_json")},
}


def driver_options(config: AgentConfig, interface: str) -> dict[str, Any]:
    """The keyword options of the implementation ``[drivers]`` names for ``interface`` (``OPTION_TABLES``)."""
    options: dict[str, Any] = {}
    for path in OPTION_TABLES[interface].get(getattr(config.drivers, interface), ()):
        value: Any = config
        for part in path.split("."):
            value = getattr(value, part)
        if isinstance(value, BaseModel):
            options.update(value.model_dump(exclude_none=True))
        elif value is not None:
            options[path.rsplit(".", 1)[1]] = value
    return options


def load_drivers(config: AgentConfig) -> DriverSet:
    """Instantiate the drivers named in ``[drivers]`` with their options (``OPTION_TABLES``); the BMC
    also gets ``[bmc]``'s address and credentials. The inventory driver is made only with ``[pci]``."""
    names = config.drivers
    bmc = config.bmc
    access = BmcAccess(address=bmc.address, username=bmc.username,
                       password=bmc.login_password.get_secret_value())
    return DriverSet(
        functions=load_driver(FunctionDriver, names.functions, **driver_options(config, "functions")),
        switch=load_driver(SwitchDriver, names.switch, **driver_options(config, "switch")),
        storage=load_driver(StorageDriver, names.storage, **driver_options(config, "storage")),
        bmc=load_driver(BmcDriver, names.bmc, access, **driver_options(config, "bmc")),
        inventory=None if config.pci is None else load_driver(
            InventoryDriver, names.inventory, **driver_options(config, "inventory")),
    )
