"""Fault injection for the tests that make each driver call of an action fail in turn: the drivers of a node it
covers, the calls the last action made on them (but reads), arming one, and what a node holds afterwards."""

from __future__ import annotations

from typing import Any

from harness import Cloud

#: driver operations that only read: a fault there is not a step of the action that could be left half done
READS = frozenset({"get", "list", "list_ports", "power_state", "hw_info", "validate", "serial_console", "state",
                   "topology", "domains", "device_addresses", "migration_progress"})

#: (node, driver, operation, nth): the nth call of an operation of one of a node's drivers
Call = tuple[str, str, str, int]


def drivers_of(cloud: Cloud, hostname: str) -> dict[str, Any]:
    """A node's drivers that faults are injected into, by name: functions, switch, storage and its hypervisor
    (a vm node) or BMC (bare metal)."""
    drivers = cloud.drivers(hostname)
    last = "hypervisor" if hostname.startswith("dpu-vm") else "bmc"
    return {name: getattr(drivers, name) for name in ("functions", "switch", "storage", last)}


def clear(cloud: Cloud, *hostnames: str) -> None:
    """Forget the nodes' recorded calls and armed faults."""
    for hostname in hostnames:
        for driver in drivers_of(cloud, hostname).values():
            driver.faults.clear()


def mutating_calls(cloud: Cloud, hostname: str) -> list[Call]:
    """Every call the last action made on the node's drivers, but reads, in the order each driver saw them."""
    calls = []
    for name, driver in drivers_of(cloud, hostname).items():
        seen: dict[str, int] = {}
        for operation in driver.faults.calls:
            if operation not in READS:
                calls.append((hostname, name, operation, seen.get(operation, 0)))
            seen[operation] = seen.get(operation, 0) + 1
    return calls


def arm(cloud: Cloud, call: Call) -> Any:
    """Make that call fail with an injected fault; the driver's fault injector, to see whether it fired."""
    hostname, driver, operation, nth = call
    faults = drivers_of(cloud, hostname)[driver].faults
    faults.arm(operation, skip=nth)
    return faults


def held_on(cloud: Cloud, hostname: str) -> dict[str, Any]:
    """What a node's drivers hold: functions, switch ports, storage attachments, domains (vm nodes)."""
    drivers = cloud.drivers(hostname)
    held = {"functions": drivers.functions.list(), "switch": drivers.switch.list_ports(),
            "storage": drivers.storage.list(), "instances": cloud.router.agents[hostname].get("/v1/instances").json()}
    if hostname.startswith("dpu-vm"):
        held["domains"] = drivers.hypervisor.domains()
    return held


def assert_clean(cloud: Cloud, hostname: str) -> None:
    """The node holds nothing: no function, switch port, attachment, instance or domain."""
    assert all(not value for value in held_on(cloud, hostname).values()), held_on(cloud, hostname)
