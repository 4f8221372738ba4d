"""`dpustack pci device|pool …`: the PCI devices nodes offer, and the pools they group them into (admin)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dpustack.cli.context import api
from dpustack.cli.output import Format, FormatOption, print_list

app = typer.Typer(help="Inspect PCI devices and pools (admin).", no_args_is_help=True)
devices = typer.Typer(help="PCI devices offered by the nodes.", no_args_is_help=True)
pools = typer.Typer(help="PCI pools: a node's devices grouped by its pci_flavor_attrs.", no_args_is_help=True)
app.add_typer(devices, name="device")
app.add_typer(pools, name="pool")

NodeOption = Annotated[str | None, typer.Option("--node", help="Only this node (hostname or id).")]


def dev_type(value: str | None) -> str | None:
    """`type-VF` → `VF`: the API's device types, shortened for tables."""
    return value.removeprefix("type-") if value else value


def vendor_product(device: dict[str, Any]) -> str:
    return f"{device.get('vendor_id')}:{device.get('product_id')}"


def _status(device: dict[str, Any]) -> str:
    return f"{device.get('status')} (removed)" if device.get("removed") else str(device.get("status"))


DEVICE_COLUMNS = [("Node", "node"), ("Address", "address"), ("Vendor:Product", vendor_product),
                  ("Type", lambda d: dev_type(d.get("dev_type"))), ("Parent", "parent_addr"),
                  ("NUMA", "numa_node"), ("Status", _status), ("Card serial", "card_serial_number"),
                  ("Tags", "extra_info")]
POOL_COLUMNS = [("Node", "node"), ("Attrs", "attrs"), ("NUMA", "numa_node"),
                ("Type", lambda p: dev_type(p.get("dev_type"))), ("Remote managed", "remote_managed"),
                ("Count", "count"), ("Free", "free"), ("Used", "used")]


@devices.command("list")
def list_devices(node: NodeOption = None, fmt: FormatOption = Format.table) -> None:
    """List PCI devices (PFs, VFs and plain PCI devices) with their allocation status."""
    print_list(api().get("/v1/pci/devices", node=node), DEVICE_COLUMNS, fmt)


@pools.command("list")
def list_pools(node: NodeOption = None, fmt: FormatOption = Format.table) -> None:
    """List PCI pools with how many of their devices are free and used."""
    print_list(api().get("/v1/pci/pools", node=node), POOL_COLUMNS, fmt)
