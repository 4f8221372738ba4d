"""Benchmark: plug N representors into a real Open vSwitch, batched vs one process per port.

    .venv/bin/python bench/ovs_plug.py [--count 500]

One private ovsdb-server + ovs-vswitchd (userspace datapath, tests/ovs_sandbox.py)
serves both runs, one after the other, on the same bridge:

* dpustack: ``OvsSwitchDriver.plug_many`` — the N ports, with their
  ``iface-id`` / ``attached-mac`` external_ids, in one OVSDB transaction on the
  driver's persistent connection;
* baseline: one ``ovs-vsctl -- --may-exist add-port br-int X -- set Interface X
  external_ids:...`` process per port, the way os-vif's vsctl backend plugs.

Both wait until ovs-vswitchd has applied the change (ovs-vsctl without
``--no-wait``; the driver waits for ``cur_cfg``). Ports are system interfaces
whose netdevs do not exist, as in the integration tests: ovs-vswitchd still
reconfigures for each, nothing is created in the kernel. The ports are
removed between the runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from ovs_sandbox import OvsSandbox  # noqa: E402

from dpustack.drivers.switch.ovs import OvsSwitchDriver  # noqa: E402

BRIDGE = "br-int"


def representors(count: int) -> dict[str, dict[str, str]]:
    return {f"pf0vf{n}": {"iface-id": f"00000000-0000-4000-8000-{n:012x}",
                          "attached-mac": f"fa:16:3e:00:{n >> 8 & 0xff:02x}:{n & 0xff:02x}",
                          "iface-status": "active"}
            for n in range(count)}


def plug_with_driver(driver: OvsSwitchDriver, ports: dict[str, dict[str, str]]) -> float:
    started = time.perf_counter()
    driver.plug_many(BRIDGE, ports)
    return time.perf_counter() - started


def plug_with_vsctl(ovs: OvsSandbox, ports: dict[str, dict[str, str]]) -> float:
    started = time.perf_counter()
    for name, external_ids in ports.items():
        ids = [f"external_ids:{key}={value}" for key, value in external_ids.items()]
        subprocess.run(["ovs-vsctl", f"--db={ovs.db}", "--timeout=120", "--", "--may-exist", "add-port", BRIDGE,
                        name, "--", "set", "Interface", name, *ids],
                       env=ovs.env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="representors to plug (default 500)")
    args = parser.parse_args()
    ports = representors(args.count)

    with OvsSandbox().start() as ovs:
        started = time.perf_counter()
        driver = OvsSwitchDriver(ovs.db, timeout=120)
        driver.validate()
        connect = time.perf_counter() - started
        try:
            ovs.vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev")  # same start for both

            batched = plug_with_driver(driver, ports)
            assert len(driver.list_ports(BRIDGE)) == args.count
            driver.unplug_many(BRIDGE, ports)
            assert ovs.vsctl("list-ports", BRIDGE) == ""

            per_process = plug_with_vsctl(ovs, ports)
            assert len(ovs.vsctl("list-ports", BRIDGE).split()) == args.count
        finally:
            driver.close()

    n = args.count
    print(f"{n} representors into {BRIDGE} (ovs-vswitchd userspace datapath, each run waits for vswitchd)")
    print(f"  dpustack plug_many, 1 transaction : {batched:8.3f} s  {n / batched:10.0f} ports/s"
          f"   (+ {connect * 1000:.0f} ms to connect once)")
    print(f"  ovs-vsctl add-port, 1 per port    : {per_process:8.3f} s  {n / per_process:10.0f} ports/s")
    print(f"  ratio                             : {per_process / batched:8.1f} x faster batched")


if __name__ == "__main__":
    main()
