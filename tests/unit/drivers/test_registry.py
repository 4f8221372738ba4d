"""Drivers are found by name through the dpustack.drivers.<interface> entry-point groups."""

import pytest

from dpustack.drivers.bmc import BmcAccess, BmcDriver
from dpustack.drivers.bmc.memory import MemoryBmcDriver
from dpustack.drivers.functions import FunctionDriver
from dpustack.drivers.functions.memory import MemoryFunctionDriver
from dpustack.drivers.registry import available, load_driver
from dpustack.drivers.storage import StorageDriver
from dpustack.drivers.storage.memory import MemoryStorageDriver
from dpustack.drivers.switch import SwitchDriver
from dpustack.drivers.switch.memory import MemorySwitchDriver
from dpustack.errors import DriverError


@pytest.mark.parametrize("interface, implementation", [
    (FunctionDriver, MemoryFunctionDriver),
    (SwitchDriver, MemorySwitchDriver),
    (StorageDriver, MemoryStorageDriver),
    (BmcDriver, MemoryBmcDriver),
])
def test_every_interface_has_a_memory_driver_registered_by_entry_point(interface, implementation):
    assert "memory" in available(interface)
    assert type(load_driver(interface, "memory")) is implementation


def test_options_reach_the_driver():
    bmc = load_driver(BmcDriver, "memory", BmcAccess("10.0.0.9"), cpu=8)

    assert bmc.hw_info().cpu == 8


def test_an_unknown_name_lists_what_is_installed():
    with pytest.raises(DriverError, match=r"no switch driver named 'ovs-dpdk' \(installed: .*memory"):
        load_driver(SwitchDriver, "ovs-dpdk")


def test_options_a_driver_does_not_take_are_a_readable_error():
    with pytest.raises(DriverError, match="functions driver 'memory' rejected its options"):
        load_driver(FunctionDriver, "memory", colour="blue")
