"""Find a driver implementation by interface and name through entry points.

Implementations register under the group ``dpustack.drivers.<interface>``,
e.g. ``[project.entry-points."dpustack.drivers.bmc"] memory = "...:MemoryBmcDriver"``.
A new implementation is one module and one entry point: it declares its own
options (:mod:`dpustack.drivers.options`).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from dpustack.drivers.base import Driver
from dpustack.drivers.bmc import BmcDriver
from dpustack.drivers.functions import FunctionDriver
from dpustack.drivers.hypervisor import HypervisorDriver
from dpustack.drivers.inventory import InventoryDriver
from dpustack.drivers.storage import StorageDriver
from dpustack.drivers.switch import SwitchDriver
from dpustack.errors import DriverError

D = TypeVar("D", bound=Driver)

#: every driver interface of a node's hardware profile, by entry-point group suffix
INTERFACES: dict[str, type[Driver]] = {
    interface.interface: interface
    for interface in (FunctionDriver, SwitchDriver, StorageDriver, BmcDriver, InventoryDriver, HypervisorDriver)
}


def available(interface: type[Driver]) -> list[str]:
    """Names of the implementations installed for ``interface`` (e.g. ``BmcDriver``)."""
    return sorted(ep.name for ep in _entry_points(interface))


def find_driver(interface: type[D], name: str) -> type[D]:
    """The class of the implementation ``name`` of ``interface``; DriverError if none is installed
    or it cannot be imported or is no ``interface``."""
    found = [ep for ep in _entry_points(interface) if ep.name == name]
    if not found:
        installed = ", ".join(available(interface)) or "none"
        raise DriverError(f"no {interface.interface} driver named '{name}' (installed: {installed})")
    try:
        cls = found[0].load()
    except Exception as exc:  # a broken plugin must fail with its name, not an obscure trace
        raise DriverError(f"{interface.interface} driver '{name}' cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise DriverError(f"{interface.interface} driver '{name}' is not a {interface.__name__}")
    unknown = sorted(set(cls.shared_options) - set(interface.shared_tables))
    if unknown:
        raise DriverError(f"{interface.interface} driver '{name}' takes tables {interface.__name__} does not share: "
                          f"{', '.join(unknown)}")
    return cls


def load_driver(interface: type[D], name: str, *args: Any, **options: Any) -> D:
    """Instantiate the implementation ``name`` of ``interface`` with the given arguments."""
    cls = find_driver(interface, name)
    try:
        return cls(*args, **options)
    except TypeError as exc:
        raise DriverError(f"{interface.interface} driver '{name}' rejected its options: {exc}") from exc


def _entry_points(interface: type[Driver]) -> list[EntryPoint]:
    return list(entry_points(group=f"dpustack.drivers.{interface.interface}"))
