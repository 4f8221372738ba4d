"""The agent's metadata proxy on a real data plane: OVN localport, a namespace per network, HTTP from a host.

One DPU (OVS netdev + ovn-controller) and one host. The network comes from
OvnBackend (so with its metadata localport); the host's PF is a lab function
whose representor is plugged into br-int. The host takes DHCP (which gives the
on-link route to 169.254.169.254), then fetches metadata through the proxy;
the controller is stood in for by a function that echoes what it was asked.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from dpustack import metadata_port
from dpustack.agent.config import MetadataSection
from dpustack.agent.metadata_proxy import MetadataProxies
from dpustack.controller.netbackend import PortSpec, SubnetSpec
from dpustack.controller.netbackend.ovn import OvnBackend
from dpustack.drivers.functions import FunctionSpec
from dpustack.drivers.functions.lab import LabFunctionDriver, host_ifname
from dpustack.drivers.switch.ovs import OvsSwitchDriver
from dpustack.lab.dataplane import DataPlane, metadata_prefix
from dpustack.lab.dhcp import dhcp_once
from dpustack.linux import netns
from lab_plane import running_plane, wait_for
from dpustack.lab.guest import fetch_metadata

_NEEDED = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "dhclient", "ethtool")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the metadata datapath needs root (namespaces)"),
    pytest.mark.skipif(any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
                           for p in _NEEDED), reason=f"needs {', '.join(_NEEDED)}"),
]

NETWORK = str(uuid.uuid4())
SUBNET = SubnetSpec(id="sub-md", cidr="10.60.0.0/24", gateway_ip="10.60.0.1")
PORT, MAC, IP = "port-md-1", "fa:16:3e:60:00:11", "10.60.0.11"


def _echo(network_id: str, source_ip: str, path: str) -> tuple[int, str, bytes]:
    """The controller's part, reduced to saying what it was asked."""
    if path == "missing":
        return 404, "text/plain", b"no such thing\n"
    return 200, "text/plain", f"{network_id} {source_ip} {path}".encode()


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    with running_plane("dpm") as lab:
        yield lab


def test_a_host_gets_metadata_for_its_own_address_only_and_the_proxy_cleans_up(plane: DataPlane):
    dpu = plane.add_dpu("dpu-md", "192.168.100.1", serial="MT-MD-0001")
    host = plane.add_host("host-md")
    dpu.wait_for_bridge("br-int")
    backend = OvnBackend(plane.central.nb, timeout=10)
    switch = OvsSwitchDriver(dpu.db, timeout=10)
    config = MetadataSection(enabled=True, dpu_netns=dpu.netns, namespace_prefix=metadata_prefix(dpu.netns))
    proxies = MetadataProxies(config, switch, "br-int", _echo)
    try:
        backend.ensure_network(NETWORK, "net-md", [SUBNET])
        backend.ensure_port(PortSpec(id=PORT, network_id=NETWORK, mac=MAC, ip=IP, subnet_id=SUBNET.id))
        functions = LabFunctionDriver(host, dpu.netns, state_dir=plane.dir / "functions")
        function = functions.create(FunctionSpec(id="fn-md", slot=1, mac=MAC))
        switch.add_port("br-int", function.representor, {"iface-id": PORT, "attached-mac": MAC})

        changes = proxies.sync({NETWORK})
        assert len(changes) == 3, changes  # namespace, switch port, server
        assert proxies.sync({NETWORK}) == []  # converged: nothing more to do
        namespace = proxies.namespace(NETWORK)
        assert netns.exists(namespace)
        plane.central.nbctl("--timeout=20", "wait-until", "Logical_Switch_Port", PORT, "up=true")
        wait_for("the localport bound on the chassis", lambda: plane.central.sbctl(
            "--bare", "--columns=type", "find", "Port_Binding", f"logical_port={metadata_port.port_name(NETWORK)}"))

        ifname = host_ifname(1)
        lease = dhcp_once(host, ifname, plane.dir / "dhcp")
        assert lease.bound, lease.output
        assert ("169.254.169.254/32", "0.0.0.0") in lease.routes and lease.mtu == 1442
        routes = netns.run(host, ["ip", "-4", "route"]).stdout
        assert f"169.254.169.254 dev {ifname}" in routes
        assert "mtu 1442" in netns.run(host, ["ip", "link", "show", ifname]).stdout

        answer = wait_for("a metadata answer", lambda: (a := fetch_metadata(host, "openstack/latest/meta_data.json",
                                                                           timeout=3)).status and a)
        assert (answer.status, answer.body.decode()) == (200, f"{NETWORK} {IP} openstack/latest/meta_data.json")
        assert fetch_metadata(host, "missing").status == 404

        # another address on the same NIC: OVN port security drops it, no answer comes back
        netns.run(host, ["ip", "addr", "add", "10.60.0.99/24", "dev", ifname])
        spoofed = fetch_metadata(host, "openstack", timeout=3, source="10.60.0.99")
        assert spoofed.status == 0, spoofed
        assert fetch_metadata(host, "openstack", timeout=3).status == 200  # its own address still works

        # an agent restart: the namespace and port stay, a new proxy object serves again
        proxies.close()
        proxies = MetadataProxies(config, switch, "br-int", _echo)
        assert proxies.sync({NETWORK}) == [f"serving metadata for network {NETWORK}"]
        assert wait_for("an answer after the restart", lambda: fetch_metadata(host, "x", timeout=3).status) == 200

        # no port on the network any more: namespace, server and switch port go
        proxies.sync(set())
        assert not netns.exists(namespace)
        assert not [p for p in switch.list_ports("br-int") if p.external_ids.get("dpustack:role") == "metadata"]
        assert fetch_metadata(host, "x", timeout=2).status == 0
    finally:
        proxies.close()
        switch.close()
        backend.close()
