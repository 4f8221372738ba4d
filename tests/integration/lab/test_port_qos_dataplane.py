"""Port QoS on a real data plane, measured: a bit-rate limit set through the controller API caps
what the port's instance sends across Geneve, and lifting it restores the rate; a packet-rate limit
set by the agent (an OpenFlow meter on br-int) caps it too, lapses when ovn-controller reconnects,
and is back after the agent's next reconcile pass.

OVN central and two DPU namespaces (OVS userspace datapath + ovn-controller) as in
test_dataplane.py; the controller (database-only, writing the lab's OVN northbound database)
makes the network and two ports; each host namespace gets a lab PF whose representor is plugged
into its DPU's br-int with the port's iface-id, and the port's address set statically. UDP is
sent between the host namespaces only (dpustack.lab.traffic), for a few seconds at a time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dpustack.agent.hardware import DriverSet
from dpustack.agent.instance_runtime import BareMetalRuntime
from dpustack.agent.reconciler import Reconciler
from dpustack.agent.store import AgentStore, PortBinding
from dpustack.agent.wiring import Wiring
from dpustack.drivers.bmc.memory import MemoryBmcDriver
from dpustack.drivers.functions import FunctionSpec
from dpustack.drivers.functions.lab import LabFunctionDriver, host_ifname
from dpustack.drivers.storage.memory import MemoryStorageDriver
from dpustack.drivers.switch.ovs import OvsSwitchDriver
from dpustack.lab.daemon_pids import kill_pid
from dpustack.lab.dataplane import DataPlane, DpuNode
from dpustack.lab.traffic import Rate, measure_udp
from dpustack.linux import netns
from harness import Cloud
from lab_plane import running_plane, wait_for

_NEEDED = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "ping", "ethtool")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab data plane needs root (namespaces)"),
    pytest.mark.skipif(any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
                           for p in _NEEDED),
                       reason=f"needs {', '.join(_NEEDED)} (openvswitch, ovn-central, ovn-host)"),
]

LIMIT_BPS = 2_000_000
HOSTS = {"host-1": "dpu-1", "host-2": "dpu-2"}
SLOT = 1
SECONDS = 2.0


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    with running_plane("dpq") as lab:
        yield lab


def _chassis_of(plane: DataPlane, port_id: str) -> str:
    chassis = plane.central.sbctl("--bare", "--columns=chassis", "find", "Port_Binding", f"logical_port={port_id}")
    return plane.central.sbctl("--bare", "--columns=name", "list", "Chassis", chassis) if chassis else ""


def _kbps_meters(node: DpuNode) -> list[str]:
    """The kbps meters ovn-controller installed on the node's br-int, as ovs-ofctl prints their bands."""
    lines = node.ofctl("-O", "OpenFlow13", "dump-meters", "br-int").splitlines()
    return [band.strip() for meter, band in zip(lines, lines[1:]) if " kbps " in meter]


def _pings(namespace: str, ip: str) -> bool:
    return netns.run(namespace, ["ping", "-c", "1", "-W", "1", ip], check=False, timeout=5).returncode == 0


@dataclass
class Lab:
    """Two hosts on two DPUs, each with one port of network net-qos (made through the controller API)."""

    plane: DataPlane
    cloud: Cloud
    dpus: dict[str, DpuNode]
    hosts: dict[str, str]                                   # host -> namespace
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> port (API)
    representors: dict[str, str] = field(default_factory=dict)      # host -> representor on its DPU

    def ip(self, host: str) -> str:
        return self.ports[host]["fixed_ips"][0]["ip_address"]

    def blast(self, src: str = "host-1", dst: str = "host-2", payload: int = 1000) -> Rate:
        return measure_udp(self.hosts[src], self.hosts[dst], self.ip(dst), seconds=SECONDS, payload=payload)


@pytest.fixture
def lab(plane, tmp_path) -> Iterator[Lab]:
    dpus = {name: plane.add_dpu(name, f"192.168.100.{i}", serial=f"MT-Q-{i}")
            for i, name in enumerate(sorted(set(HOSTS.values())), start=1)}
    hosts = {host: plane.add_host(host) for host in HOSTS}
    for node in dpus.values():
        node.wait_for_bridge("br-int")
    cloud = Cloud(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", nodes=0, ovn_nb=plane.central.nb, ovn_timeout=10)
    setup = Lab(plane, cloud, dpus, hosts)
    switches: list[OvsSwitchDriver] = []
    try:
        cloud.call("POST", "/v1/networks", {"name": "net-qos", "subnet": "10.70.0.0/24"})
        for host, dpu in HOSTS.items():
            port = setup.ports[host] = cloud.call("POST", "/v1/ports", {"network": "net-qos"})
            functions = LabFunctionDriver(hosts[host], dpus[dpu].netns, state_dir=plane.dir / "functions" / dpu)
            function = functions.create(FunctionSpec(id=f"fn-{host}", slot=SLOT, mac=port["mac_address"]))
            setup.representors[host] = function.representor
            switch = OvsSwitchDriver(dpus[dpu].db, timeout=10)
            switches.append(switch)
            switch.plug_many("br-int", {function.representor: {"iface-id": port["id"],
                                                                "attached-mac": port["mac_address"]}})
            netns.run(hosts[host], ["ip", "addr", "add", f"{setup.ip(host)}/24", "dev", host_ifname(SLOT)])
        for host, dpu in HOSTS.items():
            wait_for(f"{host}'s port bound to {dpu}", lambda: _chassis_of(plane, setup.ports[host]["id"]) == dpu)
        # The first packets may be lost to ARP and the tunnel-neighbour miss (see test_dataplane.py).
        wait_for("host-1 reaching host-2", lambda: _pings(hosts["host-1"], setup.ip("host-2")))
        yield setup
    finally:
        for switch in switches:
            switch.close()
        cloud.close()


def test_a_bit_rate_limit_caps_what_the_port_sends_and_lifting_it_restores_the_rate(lab: Lab):
    unlimited = lab.blast()
    assert unlimited.bits_per_second > 10 * LIMIT_BPS, f"too slow to show a limit: {unlimited}"

    sender = lab.ports["host-1"]["id"]
    assert lab.cloud.act("PUT", f"/v1/ports/{sender}/qos", {"bps": LIMIT_BPS})["status"] == "succeeded"
    assert lab.cloud.call("GET", f"/v1/ports/{sender}")["qos"] == {"bps": LIMIT_BPS, "pps": None}
    # ovn-northd and ovn-controller make the QoS row a meter (on every chassis with the switch; the
    # logical ingress pipeline that applies it runs where the sending port is bound: dpu-1).
    dpu1 = lab.dpus["dpu-1"]
    wait_for("the meter on dpu-1", lambda: _kbps_meters(dpu1) == ["type=drop rate=2000 burst_size=1600"])
    limited = lab.blast()
    reverse = lab.blast("host-2", "host-1")  # what host-1 receives is not limited
    assert 0.5 * LIMIT_BPS <= limited.bits_per_second <= 1.1 * LIMIT_BPS, limited
    assert reverse.bits_per_second > 10 * LIMIT_BPS, reverse

    assert lab.cloud.act("DELETE", f"/v1/ports/{sender}/qos")["status"] == "succeeded"
    wait_for("the meter to go", lambda: _kbps_meters(dpu1) == [])
    restored = lab.blast()
    assert restored.bits_per_second > 10 * LIMIT_BPS, restored
    print(f"\nhost-1 -> host-2 UDP, 1000-byte payload, {SECONDS:g} s after a 0.5 s warm-up:"
          f"\n  unlimited:              {unlimited}\n  limited to {LIMIT_BPS / 1e6:g} Mbit/s:    {limited}"
          f"\n  reverse while limited:  {reverse}\n  limit removed:          {restored}")


# -- packets per second: the agent's meter, re-applied by its reconcile ---------------------
PPS = 1000


def _agent_of(lab: Lab, host: str, state: Path) -> tuple[Wiring, Reconciler, OvsSwitchDriver]:
    """The agent pieces of the host's node, over the lab's drivers, with the host's port recorded
    as plugged (the fixture plugged it): what a reconcile pass of that node's agent works on."""
    dpu = HOSTS[host]
    drivers = DriverSet(
        functions=LabFunctionDriver(lab.hosts[host], lab.dpus[dpu].netns,
                                    state_dir=lab.plane.dir / "functions" / dpu),
        switch=OvsSwitchDriver(lab.dpus[dpu].db, timeout=10),  # br-int.mgmt: next to db.sock
        storage=MemoryStorageDriver(), bmc=MemoryBmcDriver(cpu=8, mem=16384))
    store = AgentStore(state / "agent.db")
    port = lab.ports[host]
    store.put(PortBinding(port_id=port["id"], bridge="br-int", port_name=lab.representors[host],
                          mac=port["mac_address"], network_id=port["network_id"]))
    wiring = Wiring(store, drivers)
    runtime = BareMetalRuntime(drivers.bmc)
    return wiring, Reconciler(store, drivers, wiring, runtime, lock=threading.RLock()), drivers.switch


def _restart_ovn_controller(node: DpuNode) -> None:
    """Stop the node's ovn-controller by PID and start it again as DpuNode.start() does."""
    kill_pid(node.pids()["ovn-controller"], str(node.dir))
    rundirs = {name: str(node.dir) for name in ("OVS_RUNDIR", "OVS_LOGDIR", "OVN_RUNDIR", "OVN_LOGDIR")}
    subprocess.run(["ip", "netns", "exec", node.netns, "ovn-controller", node.db,
                    f"--pidfile={node.dir / 'ovn-controller.pid'}", f"--log-file={node.dir / 'ovn-controller.log'}",
                    "--detach"], env={**os.environ, **rundirs}, check=True, timeout=30, capture_output=True)


def test_a_packet_rate_limit_caps_the_port_lapses_when_ovn_controller_reconnects_and_reconcile_restores_it(
        lab: Lab, tmp_path):
    """The agent's packet-rate limit (docs/network.md, "Port QoS"): an OpenFlow pktps meter and a table-0 flow
    on the representor ahead of ovn-controller's. It limits and survives recomputes; ovn-controller deletes
    every flow and meter on br-int when it (re)connects, and the agent's next reconcile pass puts it back."""
    port = lab.ports["host-1"]["id"]
    wiring, reconciler, switch = _agent_of(lab, "host-1", tmp_path)
    dpu1 = lab.dpus["dpu-1"]
    representor = lab.representors["host-1"]
    try:
        unlimited = lab.blast(payload=64)
        assert unlimited.packets_per_second > 10 * PPS, f"too slow to show a limit: {unlimited}"

        wiring.set_packet_rate(port, PPS)  # what PUT /v1/switch/ports/{id}/qos does on the agent
        assert switch.packet_rate("br-int", representor) == PPS
        metered = lab.blast(payload=64)
        assert 0.5 * PPS <= metered.packets_per_second <= 1.1 * PPS, metered

        dpu1.appctl("ovn-controller", "recompute")  # a full recompute leaves foreign flows alone ...
        assert switch.packet_rate("br-int", representor) == PPS
        assert reconciler.run().repaired == []

        ofport = dpu1.vsctl("get", "Interface", representor, "ofport")
        _restart_ovn_controller(dpu1)  # ... a reconnect does not
        wait_for("ovn-controller to clear br-int as it reconnects",
              lambda: switch.packet_rate("br-int", representor) is None)
        wait_for("ovn-controller's own table-0 flow for the representor",
              lambda: f"priority=100,in_port={ofport} " in dpu1.ofctl("-O", "OpenFlow13", "--no-names",
                                                                      "dump-flows", "br-int", "table=0"))
        wait_for("host-1 reaching host-2 again", lambda: _pings(lab.hosts["host-1"], lab.ip("host-2")))
        lapsed = lab.blast(payload=64)
        assert lapsed.packets_per_second > 5 * PPS, lapsed  # the window until the next reconcile pass

        result = reconciler.run()
        assert result.repaired == [f"re-applied packet-rate limit {PPS} pkt/s to port {port} (br-int/{representor})"]
        assert switch.packet_rate("br-int", representor) == PPS
        healed = lab.blast(payload=64)
        assert 0.5 * PPS <= healed.packets_per_second <= 1.1 * PPS, healed
        assert reconciler.run().repaired == []

        wiring.set_packet_rate(port, None)
        assert switch.packet_rate("br-int", representor) is None
        assert not re.search(r"meter=\d+ pktps", dpu1.ofctl("-O", "OpenFlow13", "dump-meters", "br-int"))
        restored = lab.blast(payload=64)
        assert restored.packets_per_second > 5 * PPS, restored
    finally:
        switch.close()
    print(f"\nhost-1 -> host-2 UDP, 64-byte payload, {SECONDS:g} s after a 0.5 s warm-up:"
          f"\n  unlimited:                              {unlimited}"
          f"\n  pps {PPS}:                               {metered}"
          f"\n  after ovn-controller restarted:         {lapsed}"
          f"\n  after the agent's next reconcile pass:  {healed}"
          f"\n  limit removed:                          {restored}")
