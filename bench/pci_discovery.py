"""Benchmark: PCI discovery + filtering + pooling on a generated tree of 16 PFs x 256 VFs.

    .venv/bin/python bench/pci_discovery.py [--pfs 16] [--vfs 256] [--repeat 3]

Baseline, measured in the same run on the same tree: the same driver, but
each VF's logical number is found the way seed 001 describes it — follow the
VF's ``physfn`` link, then resolve the PF's ``virtfn<N>`` links one by one
until one points back at the VF (quadratic in the VFs per PF). dpustack reads
every PF's virtfn links once. Best of ``--repeat`` runs each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from dpustack.drivers.inventory.sysfs import VIRTFN, Relations, SysfsInventoryDriver
from dpustack.lab import pcitrees
from dpustack.pci.address import canonical_address
from dpustack.pci.pools import group_pools
from dpustack.pci.specs import parse_information, select

INFORMATION = [{"match": {"vendor_id": "8086", "product_id": "154c"},
                "extra": {"physical_network": "physnet1", "trusted": "true"}},
               {"match": {"vendor_id": "8086", "product_id": "1572"}, "extra": {"e.role": "uplink"}}]


class NaiveSysfsInventoryDriver(SysfsInventoryDriver):
    """The baseline: per VF, scan its PF's virtfn links until one resolves to the VF."""

    def vf_relations(self, entries: dict[str, set[str]]) -> Relations:
        relations: Relations = {}
        for vf, names in entries.items():
            if "physfn" not in names:
                continue
            pf = canonical_address(os.path.basename(os.readlink(self._devices_dir / vf / "physfn")))
            for name in sorted(os.listdir(self._devices_dir / pf)):
                if name.startswith(VIRTFN) and os.path.basename(os.readlink(self._devices_dir / pf / name)) == vf:
                    relations[vf] = (pf, int(name[len(VIRTFN):]))
                    break
        return relations


def build_tree(root: Path, pfs: int, vfs: int) -> int:
    """Intel-like PFs, one per bus pair (256 VFs at offset 1 spill onto the next bus); return the function count."""
    cards = [pcitrees.Card(f"nic{n}", (pcitrees.sriov_pf(f"0000:{0x10 + 2 * n:02x}:00.0", "8086", "1572", "154c", vfs,
                                                         total_vfs=vfs, driver="i40e", vf_driver="iavf",
                                                         numa_node=n % 2, netdev=f"enp{0x10 + 2 * n}s0f0",
                                                         mac_base=0x3CFDFE000000 + (n << 16)),))
             for n in range(pfs)]
    pcitrees.write_tree(root, cards)
    return pfs * (vfs + 1)


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    """The fastest of ``repeat`` runs (seconds) and what the run returned."""
    best, result = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def pipeline(driver: SysfsInventoryDriver) -> Callable[[], int]:
    specs = parse_information(INFORMATION)

    def run() -> int:
        devices = driver.devices()
        offered = select(devices, specs).devices
        pools = group_pools(offered, ["vendor_id", "product_id", "extra_info"])
        assert sum(p.count for p in pools) == len(offered) == len(devices)
        assert all(d.vf_num is not None for d in devices if d.dev_type == "type-VF")
        return len(devices)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pfs", type=int, default=16)
    parser.add_argument("--vfs", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpustack-bench-") as tmp:
        root = Path(tmp) / "sys"
        count = build_tree(root, args.pfs, args.vfs)
        ours, found = best_of(args.repeat, pipeline(SysfsInventoryDriver(root)))
        naive, naive_found = best_of(args.repeat, pipeline(NaiveSysfsInventoryDriver(root)))
    assert found == naive_found == count
    print(f"tree: {args.pfs} PFs x {args.vfs} VFs = {count} functions; discovery + filtering + pooling, "
          f"best of {args.repeat}")
    print(f"  dpustack (virtfn links read once per PF):     {ours:7.3f} s  {count / ours:10,.0f} devices/s")
    print(f"  baseline (seed 001: scan PF links per VF):    {naive:7.3f} s  {count / naive:10,.0f} devices/s")
    print(f"  speed-up: {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
