"""The lab data plane for real: OVN central, two DPU namespaces (OVS netdev + ovn-controller), Geneve between them.

A network with native DHCP and two ports is written through OvnBackend; on
each DPU the lab function driver hot-plugs a PF (veth) into a host namespace
with the port's MAC and the OVS switch driver plugs its representor into
br-int. Each host then gets its address from OVN's DHCP, host-1 pings host-2
across the tunnel, and once host-2's representor is unplugged the ping meets
silence. Traffic stays inside the namespaces the test made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpustack.controller.netbackend import PortSpec, SubnetSpec
from dpustack.controller.netbackend.ovn import OvnBackend
from dpustack.drivers.functions import FunctionSpec
from dpustack.drivers.functions.lab import LabFunctionDriver, host_ifname
from dpustack.drivers.switch.ovs import OvsSwitchDriver
from dpustack.lab.dataplane import DataPlane, DpuNode
from dpustack.lab.dhcp import dhcp_once
from dpustack.linux import netns
from lab_plane import running_plane, wait_for

_NEEDED = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "dhclient", "ping", "ethtool")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab data plane needs root (namespaces)"),
    pytest.mark.skipif(any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
                           for p in _NEEDED),
                       reason=f"needs {', '.join(_NEEDED)} (openvswitch, ovn-central, ovn-host, isc-dhcp-client)"),
]

NETWORK = "net-dp"
SUBNET = SubnetSpec(id="sub-dp", cidr="10.50.0.0/24", gateway_ip="10.50.0.1")
PORTS = {  # host -> (port id, MAC, IP, DPU)
    "host-1": ("port-dp-1", "fa:16:3e:50:00:11", "10.50.0.11", "dpu-1"),
    "host-2": ("port-dp-2", "fa:16:3e:50:00:12", "10.50.0.12", "dpu-2"),
}
SLOT = 1


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    with running_plane("dpt") as lab:
        yield lab


def _ping(host_ns: str, ip: str) -> subprocess.CompletedProcess[str]:
    return netns.run(host_ns, ["ping", "-c", "3", "-W", "2", "-i", "0.5", ip], check=False, timeout=20)


def _chassis_of(plane: DataPlane, port_id: str) -> str:
    """Name of the chassis the port is bound to ("" if unbound)."""
    chassis = plane.central.sbctl("--bare", "--columns=chassis", "find", "Port_Binding", f"logical_port={port_id}")
    if not chassis:
        return ""
    return plane.central.sbctl("--bare", "--columns=name", "list", "Chassis", chassis)


def _diagnostics(node: DpuNode) -> str:
    return (f"\n=== {node.name}: ovs-ofctl dump-flows br-int (DHCP/controller) ===\n"
            + "\n".join(line for line in node.ofctl("dump-flows", "br-int").splitlines()
                        if "udp" in line and ("67" in line or "68" in line) or "controller" in line)
            + f"\n=== {node.name} logs ===" + node.log_tails(15))


def test_two_dpus_dhcp_ping_across_geneve_then_silence_after_unplug(plane: DataPlane):
    timings: dict[str, float] = {}
    started = time.monotonic()
    dpus = {"dpu-1": plane.add_dpu("dpu-1", "192.168.100.1", serial="MT-DP-0001"),
            "dpu-2": plane.add_dpu("dpu-2", "192.168.100.2", serial="MT-DP-0002")}
    hosts = {host: plane.add_host(host) for host in PORTS}
    for node in dpus.values():
        node.wait_for_bridge("br-int")
    timings["daemons up"] = time.monotonic() - started

    backend = OvnBackend(plane.central.nb, timeout=10)
    switches: dict[str, OvsSwitchDriver] = {}
    try:
        # -- the network and ports, as the controller writes them
        backend.ensure_network(NETWORK, NETWORK, [SUBNET])
        for port_id, mac, ip, dpu in PORTS.values():
            backend.ensure_port(PortSpec(id=port_id, network_id=NETWORK, mac=mac, ip=ip,
                                         subnet_id=SUBNET.id, requested_chassis=dpu))

        # -- on each DPU: a PF with the port's MAC, its representor plugged into br-int
        ifname = host_ifname(SLOT)
        for host, (port_id, mac, _ip, dpu) in PORTS.items():
            node = dpus[dpu]
            functions = LabFunctionDriver(hosts[host], node.netns, state_dir=plane.dir / "functions" / dpu)
            functions.validate()
            function = functions.create(FunctionSpec(id=f"fn-{port_id}", slot=SLOT, mac=mac))
            switches[dpu] = OvsSwitchDriver(node.db, timeout=10)
            switches[dpu].plug_many("br-int", {function.representor: {"iface-id": port_id,
                                                                      "attached-mac": mac}})
        for port_id, _mac, _ip, dpu in PORTS.values():
            wait_for(f"{port_id} bound to {dpu}", lambda: _chassis_of(plane, port_id) == dpu)
            plane.central.nbctl("--timeout=20", "wait-until", "Logical_Switch_Port", port_id, "up=true")
        show = plane.central.sbctl("show")
        assert "Chassis dpu-1" in show and "Chassis dpu-2" in show, show
        assert 'ip: "192.168.100.1"' in show and 'ip: "192.168.100.2"' in show, show
        timings["ports bound"] = time.monotonic() - started

        # -- DHCP from OVN's native DHCP (ovn-controller answers through a controller action)
        leases: list[dict[str, str]] = []
        for host, (_port_id, _mac, ip, dpu) in PORTS.items():
            t0 = time.monotonic()
            result = dhcp_once(hosts[host], ifname, plane.dir / "dhcp" / host)
            timings[f"dhcp {host}"] = time.monotonic() - t0
            assert result.addresses == [f"{ip}/24"], (
                f"{host}: dhclient saw {result.reason!r}, addresses {result.addresses}\n"
                f"{result.output[-1500:]}{_diagnostics(dpus[dpu])}")
            leases.append(result.lease)
        assert leases[-1].get("new_interface_mtu") == "1442" and leases[-1].get("new_routers") == "10.50.0.1"

        # -- host-1 -> host-2 across the Geneve tunnel between the DPU namespaces
        host1, host2 = hosts["host-1"], hosts["host-2"]
        ip2 = PORTS["host-2"][2]
        t0 = time.monotonic()
        ping = _ping(host1, ip2)
        timings["ping"] = time.monotonic() - t0
        # The first echo may be lost: on a tunnel-neighbour miss the userspace datapath sends an ARP
        # for the remote encap IP out of br-phy and drops the packet that caused it (tnl/neigh/show).
        received = int(re.search(r"(\d+) received", ping.stdout).group(1)) if "received" in ping.stdout else 0
        assert ping.returncode == 0 and received >= 2, (
            ping.stdout + ping.stderr + _diagnostics(dpus["dpu-1"]) + _diagnostics(dpus["dpu-2"]))
        print(f"\nping host-1 -> host-2: {ping.stdout.strip().splitlines()[-2]}")
        tunnel = dpus["dpu-1"].appctl("ovs-vswitchd", "dpctl/dump-flows")
        assert "tnl_push" in tunnel or "tnl_pop" in tunnel, tunnel  # it really went through Geneve

        # -- unplug host-2's representor: the port is released, host-1's pings meet silence
        representor = LabFunctionDriver(host2, dpus["dpu-2"].netns,
                                        state_dir=plane.dir / "functions" / "dpu-2").get(
                                            f"fn-{PORTS['host-2'][0]}").representor
        switches["dpu-2"].del_port("br-int", representor, if_exists=False)
        wait_for("port-dp-2 released", lambda: _chassis_of(plane, PORTS["host-2"][0]) == "")
        silent = _ping(host1, ip2)
        assert silent.returncode != 0 and " 0 received" in silent.stdout, silent.stdout
        timings["total"] = time.monotonic() - started
        print("\ndata plane timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    finally:
        for switch in switches.values():
            switch.close()
        backend.close()


def test_a_start_after_a_crash_removes_the_leftovers():
    directory = Path(tempfile.mkdtemp(prefix="dpt-dc-", dir="/tmp"))
    prefix = f"dpt{uuid.uuid4().hex[:6]}"
    crashed = DataPlane(directory, prefix=prefix).start()
    try:
        node = crashed.add_dpu("dpu-1", "192.168.100.1")
        crashed.add_host("host-1")
        old_pids = {**crashed.central.pids(), **{f"dpu-{k}": v for k, v in node.pids().items()}}
        assert len(old_pids) == 6, old_pids  # nb, sb, northd; ovsdb-server, ovs-vswitchd, ovn-controller
        # "crash": the object is dropped without stop(); a new one over the same directory starts clean
        again = DataPlane(directory, prefix=prefix).start()
        try:
            assert not any(Path(f"/proc/{pid}").exists() and str(directory).encode()
                           in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in old_pids.values())
            assert [n for n in netns.names() if n.startswith(prefix)] == [f"{prefix}-ul"]
            node = again.add_dpu("dpu-1", "192.168.100.1")
            assert set(node.pids()) == {"ovsdb-server", "ovs-vswitchd", "ovn-controller"}
        finally:
            again.stop()
    finally:
        crashed.stop()  # idempotent: nothing of its own is left
        shutil.rmtree(directory, ignore_errors=True)
    assert not [n for n in netns.names() if n.startswith(prefix)]
    assert not subprocess.run(["pgrep", "-f", str(directory)], capture_output=True, text=True).stdout.split()


def test_hosts_on_the_management_network_reach_each_other(plane: DataPlane):
    """Two host namespaces given management addresses ping each other over ``mgbr`` (where live migrations go),
    and a host without one has no route there."""
    first = plane.add_host("mg-1", management_ip="192.168.101.1")
    plane.add_host("mg-2", management_ip="192.168.101.2")
    alone = plane.add_host("mg-3")
    answered = _ping(first, "192.168.101.2")
    assert answered.returncode == 0 and " 0% packet loss" in answered.stdout, answered.stdout + answered.stderr
    assert _ping(alone, "192.168.101.2").returncode != 0
