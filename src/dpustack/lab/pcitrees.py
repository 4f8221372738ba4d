"""Sysfs-like PCI trees for tests, the lab and the benchmark, built from a list of cards.

The layout is the kernel's, reduced to what discovery reads::

    devices/pci0000:05/0000:05:00.0/{vendor,device,class,subsystem_*,numa_node,vpd,sriov_*}
    devices/pci0000:05/0000:05:00.0/driver  -> ../../../bus/pci/drivers/mlx5_core
    devices/pci0000:05/0000:05:00.0/virtfn0 -> ../0000:05:00.3
    devices/pci0000:05/0000:05:00.3/physfn  -> ../0000:05:00.0
    devices/pci0000:05/0000:05:00.0/net/enp5s0f0/address
    bus/pci/devices/0000:05:00.0 -> ../../../devices/pci0000:05/0000:05:00.0

VFs sit next to their PF (under the PF's ``pci<domain>:<bus>``) at the
addresses SR-IOV gives them: PF routing id + offset + N × stride.
A BlueField card also brings the DPU side: its NIC switch's devlink ports
(``devlink -j port show``), written as JSON by :func:`write_node`.

Cards available (vendor:product): ``bluefield2`` (PF 15b3:a2d6, VF 15b3:101e,
serial in the PFs' VPD), ``intel_x710`` (PF 8086:1572, VF 8086:154c, no VPD),
``gpu`` (8086:0001 or 8086:0002, the lab's two GPU models), ``encryption_cards``
(vendors V1 = 177d Cavium, V2 = 19e5 HiSilicon: 177d:000a, 177d:000b,
19e5:000b) and ``vmd_nvme`` (a function in the 32-bit domain 10000).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from dpustack.pci.address import PciAddress, parse_address
from dpustack.pci.vpd import encode_vpd

BF2_NAME = "BlueField-2 DPU 25GbE Dual-Port SFP56, Crypto Enabled, 16GB on-board DDR, 1GbE OOB management"
BF2_PART = "MBF2H332A-AEEOT"
ENCRYPTION_VENDORS = {"V1": "177d", "V2": "19e5"}  # the flavors' placeholder vendors -> PCI vendor ids


@dataclass(frozen=True)
class Function:
    """One PCI function as the tree shows it; a PF lists its VFs."""

    address: str
    vendor_id: str
    product_id: str
    class_code: str = "020000"
    subsystem: tuple[str, str] = ("0000", "0000")
    driver: str = ""
    numa_node: int = -1
    netdev: str = ""
    mac: str = ""
    vpd: bytes | None = None
    total_vfs: int = 0
    vf_product_id: str = ""
    vf_offset: int = 1
    vf_stride: int = 1
    vfs: tuple["Function", ...] = ()


@dataclass(frozen=True)
class Card:
    """One add-in card: its functions, and for a DPU the devlink ports of its NIC switch."""

    name: str
    functions: tuple[Function, ...]
    serial: str = ""
    devlink_ports: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeTree:
    """Where :func:`write_node` put a node's sysfs root and its devlink JSON."""

    root: Path
    devlink_json: Path


def mac_text(value: int) -> str:
    return ":".join(f"{(value >> shift) & 0xFF:02x}" for shift in range(40, -8, -8))


def sriov_pf(address: str, vendor_id: str, product_id: str, vf_product_id: str, num_vfs: int, *,
             total_vfs: int | None = None, vf_offset: int = 1, vf_stride: int = 1, driver: str = "",
             vf_driver: str = "", numa_node: int = -1, netdev: str = "", vf_netdev: str = "",
             mac_base: int | None = None, vpd: bytes | None = None,
             subsystem: tuple[str, str] = ("0000", "0000")) -> Function:
    """A PF with ``num_vfs`` enabled VFs at the addresses offset and stride give.

    Netdevs: VF N is ``<vf_netdev>N`` (default ``<netdev>v``). MACs: the PF
    gets ``mac_base``, VF N gets ``mac_base + 0x100 + N``.
    """
    pf = parse_address(address)
    vf_netdev = vf_netdev or (f"{netdev}v" if netdev else "")
    vfs = tuple(
        Function(address=str(PciAddress.from_routing_id(pf.domain, pf.routing_id + vf_offset + n * vf_stride)),
                 vendor_id=vendor_id, product_id=vf_product_id, subsystem=subsystem, driver=vf_driver,
                 numa_node=numa_node, netdev=f"{vf_netdev}{n}" if vf_netdev else "",
                 mac=mac_text(mac_base + 0x100 + n) if mac_base is not None else "")
        for n in range(num_vfs))
    return Function(address=str(pf), vendor_id=vendor_id, product_id=product_id, subsystem=subsystem,
                    driver=driver, numa_node=numa_node, netdev=netdev,
                    mac=mac_text(mac_base) if mac_base is not None else "", vpd=vpd,
                    total_vfs=total_vfs if total_vfs is not None else max(num_vfs, 1),
                    vf_product_id=vf_product_id, vf_offset=vf_offset, vf_stride=vf_stride, vfs=vfs)


def bluefield2(serial: str, *, bus: int = 0x05, vfs_per_pf: int = 4, numa_node: int = 0,
               mac_base: int = 0x0C42A1000000, dpu_bus: int = 0x03) -> Card:
    """A BlueField-2 as the host sees it: two PFs with VFs (BlueField-2 layout: p0/p1 uplinks, pf0vfN/pf1vfN), serial in VPD.

    PF0 is ``<bus>:00.0`` with VFs from ``.3``; PF1 is ``<bus>:00.1`` with VFs
    from ``<bus>:02.3``. The devlink ports are the DPU's (``0000:<dpu_bus>:00.x``),
    their ``function.hw_addr`` the host MACs, indexed as devlink numbers them.
    """
    vpd = encode_vpd(BF2_NAME, {"PN": BF2_PART, "EC": "B1", "V2": BF2_PART, "SN": serial,
                                "V3": f"{serial.lower()}0000", "V0": "PCIeGen4 x8"}, {"RW": "\x00" * 16})
    pfs = tuple(sriov_pf(f"0000:{bus:02x}:00.{pf}", "15b3", "a2d6", "101e", vfs_per_pf, total_vfs=127,
                         vf_offset=3 if pf == 0 else 18, driver="mlx5_core", vf_driver="mlx5_core",
                         numa_node=numa_node, netdev=f"enp{bus}s0f{pf}", vf_netdev=f"enp{bus}s0f{pf}np0v",
                         mac_base=mac_base + pf * 0x1000,
                         vpd=vpd, subsystem=("15b3", "0054"))
                for pf in range(2))
    return Card("BlueField-2", pfs, serial, _bluefield_ports(pfs, dpu_bus))


def _bluefield_ports(pfs: tuple[Function, ...], dpu_bus: int) -> dict[str, dict[str, Any]]:
    ports: dict[str, dict[str, Any]] = {}
    for pfnum, pf in enumerate(pfs):
        device, base = f"pci/0000:{dpu_bus:02x}:00.{pfnum}", 0x30000 + pfnum * 0x10000
        ports[f"{device}/{base + 0xFFFF}"] = {"type": "eth", "netdev": f"p{pfnum}", "flavour": "physical",
                                              "port": pfnum, "splittable": False}
        ports[f"{device}/{base}"] = {"type": "eth", "netdev": f"pf{pfnum}hpf", "flavour": "pcipf",
                                     "controller": 1, "pfnum": pfnum, "external": True, "splittable": False,
                                     "function": {"hw_addr": pf.mac}}
        for vfnum, vf in enumerate(pf.vfs):
            ports[f"{device}/{base + 1 + vfnum}"] = {
                "type": "eth", "netdev": f"pf{pfnum}vf{vfnum}", "flavour": "pcivf", "controller": 1,
                "pfnum": pfnum, "vfnum": vfnum, "external": True, "splittable": False,
                "function": {"hw_addr": vf.mac}}
    return ports


def intel_x710(*, bus: int = 0x3B, num_vfs: int = 4, numa_node: int = 0, mac_base: int = 0x3CFDFE000000) -> Card:
    """An Intel X710 port (PF 8086:1572, VFs 8086:154c) without VPD."""
    pf = sriov_pf(f"0000:{bus:02x}:00.0", "8086", "1572", "154c", num_vfs, total_vfs=64, vf_offset=16,
                  driver="i40e", vf_driver="iavf", numa_node=numa_node, netdev=f"enp{bus}s0f0",
                  mac_base=mac_base, subsystem=("8086", "0000"))
    return Card("Intel X710", (pf,))


def gpu(address: str = "0000:af:00.0", product_id: str = "0001", *, numa_node: int = 1) -> Card:
    """One of the lab's GPUs (8086:0001 or 8086:0002), bound to vfio-pci."""
    return Card(f"GPU 8086:{product_id}", (Function(address, "8086", product_id, class_code="030000",
                                                    driver="vfio-pci", numa_node=numa_node),))


def encryption_cards(*, bus: int = 0x86, numa_node: int = 1) -> list[Card]:
    """The lab's three encryption cards: V1 0xa, V1 0xb and V2 0xb."""
    ids = ((ENCRYPTION_VENDORS["V1"], "000a"), (ENCRYPTION_VENDORS["V1"], "000b"), (ENCRYPTION_VENDORS["V2"], "000b"))
    return [Card(f"encryption card {n + 1}", (Function(f"0000:{bus + n:02x}:00.0", vendor, product,
                                                       class_code="108000", driver="vfio-pci",
                                                       numa_node=numa_node),))
            for n, (vendor, product) in enumerate(ids)]


def vmd_nvme(address: str = "10000:01:00.0") -> Card:
    """An NVMe drive behind Intel VMD, in a domain wider than 16 bits."""
    return Card("NVMe behind VMD", (Function(address, "8086", "0a54", class_code="010802", driver="nvme",
                                             numa_node=0),))


def write_tree(root: Path, cards: Iterable[Card]) -> Path:
    """Write the cards' functions under ``root`` (which may exist); return ``root``."""
    cards = list(cards)
    (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for card in cards:
        for pf in card.functions:
            for function in (pf, *pf.vfs):
                if function.address in seen:
                    raise ValueError(f"two functions at {function.address} (in {card.name})")
                seen.add(function.address)
    for card in cards:
        for pf in card.functions:
            address = parse_address(pf.address)
            parent = root / "devices" / f"pci{address.domain:04x}:{address.bus:02x}"
            _write_function(root, parent, pf)
            for n, vf in enumerate(pf.vfs):
                _write_function(root, parent, vf)
                os.symlink(f"../{pf.address}", parent / vf.address / "physfn")
                os.symlink(f"../{vf.address}", parent / pf.address / f"virtfn{n}")
    return root


def _write_function(root: Path, parent: Path, function: Function) -> None:
    path = parent / function.address
    path.mkdir(parents=True)
    files = {"vendor": f"0x{function.vendor_id}", "device": f"0x{function.product_id}",
             "class": f"0x{function.class_code}", "subsystem_vendor": f"0x{function.subsystem[0]}",
             "subsystem_device": f"0x{function.subsystem[1]}", "numa_node": str(function.numa_node)}
    if function.total_vfs:
        files.update(sriov_totalvfs=str(function.total_vfs), sriov_numvfs=str(len(function.vfs)),
                     sriov_offset=str(function.vf_offset), sriov_stride=str(function.vf_stride),
                     sriov_vf_device=function.vf_product_id)
    for name, text in files.items():
        (path / name).write_text(text + "\n")
    if function.vpd is not None:
        (path / "vpd").write_bytes(function.vpd)
    if function.netdev:
        (path / "net" / function.netdev).mkdir(parents=True)
        (path / "net" / function.netdev / "address").write_text(function.mac + "\n")
    if function.driver:
        (root / "bus" / "pci" / "drivers" / function.driver).mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../../bus/pci/drivers/{function.driver}", path / "driver")
    link = root / "bus" / "pci" / "devices" / function.address
    os.symlink(f"../../../devices/{parent.name}/{function.address}", link)


def devlink_output(cards: Iterable[Card]) -> dict[str, Any]:
    """``devlink -j port show`` as the DPUs among the cards would print it."""
    return {"port": {handle: port for card in cards for handle, port in card.devlink_ports.items()}}


def write_node(directory: Path, cards: Iterable[Card]) -> NodeTree:
    """A node's tree in ``directory/sysfs`` and its devlink output in ``directory/devlink.json``."""
    cards = list(cards)
    tree = NodeTree(root=directory / "sysfs", devlink_json=directory / "devlink.json")
    write_tree(tree.root, cards)
    tree.devlink_json.write_text(json.dumps(devlink_output(cards), indent=2) + "\n")
    return tree
