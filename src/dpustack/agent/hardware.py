"""The node's hardware profile: one driver per interface, chosen by name in agent.toml."""

from __future__ import annotations

from dataclasses import dataclass, fields

from dpustack.agent.config import AgentConfig
from dpustack.drivers.base import Driver
from dpustack.drivers.bmc import BmcAccess, BmcDriver
from dpustack.drivers.functions import FunctionDriver
from dpustack.drivers.hypervisor import HypervisorDriver
from dpustack.drivers.inventory import InventoryDriver
from dpustack.drivers.registry import INTERFACES, load_driver
from dpustack.drivers.storage import StorageDriver
from dpustack.drivers.switch import SwitchDriver


@dataclass(frozen=True)
class DriverSet:
    """The drivers of one node, one field per interface (named as in ``[drivers]``)."""

    functions: FunctionDriver
    switch: SwitchDriver
    storage: StorageDriver
    bmc: BmcDriver
    inventory: InventoryDriver | None = None  # only with a [pci] section
    hypervisor: HypervisorDriver | None = None  # only when [drivers] names one

    def all(self) -> list[Driver]:
        """Every driver of the node, the inventory and hypervisor drivers only when there are some."""
        drivers = (getattr(self, field.name) for field in fields(self))
        return [driver for driver in drivers if driver is not None]

    def validate(self) -> None:
        """Validate every driver; the first failure raises DriverError."""
        for driver in self.all():
            driver.validate()

    def close(self) -> None:
        """Release what drivers hold open (the ovs driver's OVSDB connection); a later call reopens it."""
        for driver in self.all():
            driver.close()


def load_drivers(config: AgentConfig) -> DriverSet:
    """Instantiate the implementation ``[drivers]`` names for each interface in use, with the options it
    declares (validated with the config); every BMC implementation is also given ``[bmc]``'s address
    and credentials."""
    bmc = config.bmc
    access = BmcAccess(address=bmc.address, username=bmc.username,
                       password=bmc.login_password.get_secret_value())
    arguments = {"bmc": (access,)}
    return DriverSet(**{
        interface: load_driver(INTERFACES[interface], choice.name, *arguments.get(interface, ()), **choice.options)
        for interface, choice in config.driver_choices.items()
    })
