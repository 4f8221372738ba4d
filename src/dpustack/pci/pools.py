"""PCI stats pools: a node's offered devices grouped by ``pci_flavor_attrs``.

A device's pool is set by the values of the flavor attrs (``extra_info``
standing for all of its extra info items), its NUMA node, its device type
and whether it is remote-managed; every device is in exactly one pool, so
pools never overlap and the scheduler can simply add up counts. Tag values
group case-insensitively (flavors compare them so), and an untagged VF or PF
counts as ``remote_managed=false`` (:meth:`PciDevice.tags`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpustack.pci.device import PciDevice
from dpustack.pci.match import ignores_case

EXTRA_INFO = "extra_info"
DEFAULT_FLAVOR_ATTRS = ("vendor_id", "product_id", EXTRA_INFO)


@dataclass(frozen=True)
class Pool:
    """Devices that are interchangeable for the scheduler."""

    attrs: dict[str, str]          # grouping values, e.g. {"vendor_id": "8086", "product_id": "0001"}
    numa_node: int | None
    dev_type: str
    remote_managed: bool
    addresses: list[str]

    @property
    def count(self) -> int:
        return len(self.addresses)

    def summary(self) -> dict[str, Any]:
        """The pool as a node report carries it (without addresses)."""
        return {"attrs": dict(self.attrs), "numa_node": self.numa_node, "dev_type": self.dev_type,
                "remote_managed": self.remote_managed, "count": self.count}


def pool_attrs(device: PciDevice, attrs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The grouping values of one device; attrs the device lacks are left out."""
    values: dict[str, str] = {}
    for attr in attrs:
        if attr == EXTRA_INFO:
            values.update(device.tags())
        else:
            value = device.prop(attr)
            if value is not None:
                values[attr] = value
    return values


def pool_key(device: PciDevice, attrs: list[str] | tuple[str, ...]) -> tuple[Any, ...]:
    """A stable, hashable key: equal for exactly the devices that share a pool."""
    grouping = sorted((key, value.casefold() if ignores_case(key) else value)
                      for key, value in pool_attrs(device, attrs).items())
    return (tuple(grouping), device.numa_node, device.dev_type, device.remote_managed)


def group_pools(devices: list[PciDevice], attrs: list[str] | tuple[str, ...] = DEFAULT_FLAVOR_ATTRS) -> list[Pool]:
    """Group devices into pools, in the order each pool's first device appears."""
    grouped: dict[tuple[Any, ...], Pool] = {}
    for device in devices:
        key = pool_key(device, attrs)
        pool = grouped.get(key)
        if pool is None:
            pool = grouped[key] = Pool(attrs=pool_attrs(device, attrs), numa_node=device.numa_node,
                                       dev_type=device.dev_type, remote_managed=device.remote_managed,
                                       addresses=[])
        pool.addresses.append(device.address)
    return list(grouped.values())
