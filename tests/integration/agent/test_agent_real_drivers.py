"""The agent's bare-metal flow on real drivers: a host NIC per port, its representor in a real br-int.

Each test gets a fresh lab node: a host and a DPU network namespace, and a
private Open vSwitch whose ovs-vswitchd runs inside the DPU namespace (where
the representors are). The agent app is built from an agent.toml that names
the ``lab`` function driver and the ``ovs`` switch driver (storage and BMC
stay in memory), and is driven through its HTTP API.

What is checked is what a user would look at: ``ip -n <host> link`` on the
host, ``ovs-vsctl get Interface <representor> ...`` on the DPU, and a ping
from the host NIC through br-int to the bridge's own port.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from netns import LabNamespaces, lab_namespaces  # noqa: F401 (fixture)
from ovs_sandbox import OvsSandbox, OvsUnavailable

from dpustack.secrets import digest
from dpustack.agent.app import create_app
from dpustack.agent.config import AgentConfig, parse_config
from dpustack.agent.service import AgentService

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns about its httpx-based TestClient
    from fastapi.testclient import TestClient

API_TOKEN = "controller-to-agent-secret"
PORT_A, PORT_B = "0c7b6f0e-8a7d-4a55-9d0e-00000000000a", "0c7b6f0e-8a7d-4a55-9d0e-00000000000b"
MAC_A, MAC_B = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
BRIDGE_IP, HOST_IP = "10.99.0.254/24", "10.99.0.1/24"

BUILD = {
    "uuid": "inst-1", "name": "bm-1", "image": "centos-9",
    "flavor": {"name": "bm.4c8g", "vcpus": 4, "ram": 8192, "disk": 40},
    "networks": [{"port_id": PORT_A, "mac": MAC_A}, {"port_id": PORT_B, "mac": MAC_B}],
    "volumes": [{"volume_id": "vol-boot", "uri": "nvmf://10.0.0.5/vol-boot", "bootable": True}],
}


# ---------------------------------------------------------------- the node
class LabNode:
    """One lab node as its operator sees it: the host's NICs and the DPU's Open vSwitch."""

    def __init__(self, namespaces: LabNamespaces, ovs: OvsSandbox):
        self.ns = namespaces
        self.ovs = ovs

    def host_nics(self) -> dict[str, dict[str, Any]]:
        """``ip -n <host> link``: every NIC but lo, by name, with its MAC and ifindex."""
        return {link["ifname"]: {"mac": link["address"], "ifindex": link["ifindex"]}
                for link in _ip_links(self.ns.host) if link["ifname"] != "lo"}

    def dpu_netdevs(self) -> set[str]:
        return {link["ifname"] for link in _ip_links(self.ns.dpu)}

    def br_int_ports(self) -> set[str]:
        return set(self.ovs.vsctl("list-ports", "br-int").split())

    def interface(self, name: str) -> dict[str, str]:
        """``ovs-vsctl get Interface <name> ...``: the port id and MAC it carries, its OpenFlow port and error."""
        def get(column: str) -> str:
            return self.ovs.vsctl("get", "Interface", name, column).strip('"')
        return {"iface-id": get("external_ids:iface-id"), "attached-mac": get("external_ids:attached-mac"),
                "ofport": get("ofport"), "error": get("error")}

    def soc_reboot(self) -> None:
        """The DPU's hot-plugged functions and its switch ports are gone (the host NICs with them)."""
        for port in self.br_int_ports():
            self.ovs.vsctl("del-port", "br-int", port)
        for nic in self.host_nics():
            _ip(self.ns.host, "link", "del", nic)

    def host_reaches_br_int(self, nic: str) -> bool:
        """Ping br-int's own port on the DPU from ``nic``: the representor must really be switched.

        With ``arp_ignore=1`` the DPU's kernel answers ARP for br-int's address on br-int only, not on
        the representor, so the ping cannot take a short cut past Open vSwitch.
        """
        subprocess.run(["ip", "netns", "exec", self.ns.dpu, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"],
                       check=True)
        _ip(self.ns.dpu, "addr", "replace", BRIDGE_IP, "dev", "br-int")
        _ip(self.ns.dpu, "link", "set", "br-int", "up")
        _ip(self.ns.host, "addr", "flush", "dev", nic)  # one NIC at a time owns the subnet
        _ip(self.ns.host, "addr", "add", HOST_IP, "dev", nic)
        try:
            ping = ["ip", "netns", "exec", self.ns.host, "ping", "-c", "1", "-W", "1", BRIDGE_IP.split("/")[0]]
            return any(subprocess.run(ping, capture_output=True).returncode == 0 for _ in range(3))
        finally:
            _ip(self.ns.host, "addr", "flush", "dev", nic)


def _ip_links(namespace: str) -> list[dict[str, Any]]:
    return json.loads(_ip(namespace, "-j", "link", "show"))


def _ip(namespace: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True, check=True).stdout


# ------------------------------------------------------------------- agent
class Agent:
    """The agent app, called over HTTP as the controller calls it."""

    def __init__(self, client: TestClient):
        self.client = client
        self.service: AgentService = client.app.state.service

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {API_TOKEN}"})

    def instance(self) -> dict[str, Any]:
        response = self.call("GET", "/v1/instances/inst-1")
        assert response.status_code == 200, response.text
        return response.json()


class Agents:
    """Starts the agent app from the node's agent.toml, one at a time, as the agent process would run."""

    def __init__(self, config: AgentConfig):
        self.config = config
        self._running: ExitStack | None = None

    def start(self) -> Agent:
        self.stop()
        app = create_app(self.config, start_background=False)  # drivers from agent.toml
        stack = ExitStack()  # stopping the app closes the drivers (the OVSDB connection)
        client = stack.enter_context(TestClient(app, raise_server_exceptions=True))
        self._running = stack
        return Agent(client)

    def restart(self) -> Agent:
        return self.start()

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def node(lab_namespaces: LabNamespaces) -> Iterator[LabNode]:
    try:
        ovs = OvsSandbox(netns=lab_namespaces.dpu).start()
    except OvsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield LabNode(lab_namespaces, ovs)
    finally:
        ovs.stop()  # before the namespaces go


@pytest.fixture
def agents(node: LabNode, tmp_path: Path) -> Iterator[Agents]:
    config = parse_config({
        "hostname": "dpu-lab-1", "state_dir": str(tmp_path / "state"),
        "controller": {"url": "http://127.0.0.1:9", "token": "agent-role-token"},
        "api": {"controller_credential_sha256": digest(API_TOKEN)}, "insecure": True,
        "drivers": {"functions": "lab", "switch": "ovs", "storage": "memory", "bmc": "memory"},
        "functions": {"lab": {"host_netns": node.ns.host, "dpu_netns": node.ns.dpu}},
        "switch": {"ovs": {"connection": node.ovs.db, "timeout": 10}},
        "bmc": {"memory": {"state_file": "bmc.json"}},  # the host's power outlives the agent
    })
    runner = Agents(config)
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def built(agents: Agents) -> Agent:
    """A running agent hosting ``inst-1``: two NICs and a boot volume."""
    agent = agents.start()
    response = agent.call("POST", "/v1/instances", BUILD)
    assert response.status_code == 200, response.text
    return agent


def _nics(instance: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """port id -> (MAC, BDF, representor), as the agent reports them."""
    return {nic["port_id"]: (nic["mac"], nic["bdf"], nic["representor"]) for nic in instance["nics"]}


# ------------------------------------------------------------------- tests
def test_a_built_instance_has_host_nics_with_the_port_macs_and_representors_in_br_int(built, node):
    instance = built.instance()

    assert instance["status"] == "ACTIVE"
    assert _nics(instance) == {PORT_A: (MAC_A, "0000:42:00.0", "pf1hpf"), PORT_B: (MAC_B, "0000:43:00.0", "pf2hpf")}
    assert instance["volumes"][0]["bdf"] == "0000:41:00.0"  # the storage PF: no netdev on either side
    assert {name: nic["mac"] for name, nic in node.host_nics().items()} == {"ens1f0": MAC_A, "ens2f0": MAC_B}
    assert node.br_int_ports() == {"pf1hpf", "pf2hpf"}
    for representor, port_id, mac in (("pf1hpf", PORT_A, MAC_A), ("pf2hpf", PORT_B, MAC_B)):
        interface = node.interface(representor)
        assert (interface["iface-id"], interface["attached-mac"], interface["error"]) == (port_id, mac, "[]")
        assert int(interface["ofport"]) > 0  # ovs-vswitchd opened the representor in the DPU namespace
    assert node.host_reaches_br_int("ens1f0")


def test_removing_a_nic_unplugs_its_representor_and_deletes_its_host_nic(built, node):
    response = built.call("DELETE", f"/v1/instances/inst-1/nics/{PORT_B}")

    assert response.status_code == 200, response.text
    assert list(_nics(response.json()["instance"])) == [PORT_A]
    assert node.br_int_ports() == {"pf1hpf"}
    assert set(node.host_nics()) == {"ens1f0"}
    assert "pf2hpf" not in node.dpu_netdevs()


def test_a_restarted_agent_changes_nothing(built, agents, node):
    before = (built.instance(), node.host_nics(), node.interface("pf1hpf"), node.interface("pf2hpf"))

    agent = agents.restart()

    assert agent.service.reconciler.last.ok and agent.service.reconciler.last.repaired == [
        "re-attached volume vol-boot"]  # the memory storage driver forgot it; OVS and the veths did not
    # same ifindex: no host NIC was re-created; same ofport: no port was re-plugged
    assert (agent.instance(), node.host_nics(), node.interface("pf1hpf"), node.interface("pf2hpf")) == before


def test_after_a_soc_reboot_the_nics_and_ports_come_back_with_the_same_names_macs_and_bdfs(built, agents, node):
    before = built.instance()
    agents.stop()
    node.soc_reboot()
    assert node.host_nics() == {} and node.br_int_ports() == set()

    agent = agents.start()  # the agent starts with the SoC and reconciles

    assert agent.service.reconciler.last.ok
    assert node.ovs.transactions("dpustack: plug_many 2 ports into br-int") == 1  # both ports, one transaction
    assert agent.instance() == before
    assert {name: nic["mac"] for name, nic in node.host_nics().items()} == {"ens1f0": MAC_A, "ens2f0": MAC_B}
    assert node.br_int_ports() == {"pf1hpf", "pf2hpf"}
    assert node.interface("pf2hpf")["iface-id"] == PORT_B
    assert node.host_reaches_br_int("ens2f0")


def test_a_host_nic_lost_while_the_agent_runs_comes_back_and_passes_traffic_again(built, node):
    ofport = node.interface("pf1hpf")["ofport"]
    _ip(node.ns.host, "link", "del", "ens1f0")  # its representor goes with it; the OVS port stays

    result = built.service.reconciler.run()

    assert result.ok, result.errors
    assert node.host_nics()["ens1f0"]["mac"] == MAC_A
    assert node.interface("pf1hpf")["iface-id"] == PORT_A
    # re-plugged, not just left in place: ovs-vswitchd must let go of the old netdev
    assert node.interface("pf1hpf")["ofport"] != ofport
    assert node.host_reaches_br_int("ens1f0")


def test_deleting_the_instance_leaves_no_host_nic_no_representor_and_no_ovs_port(built, node):
    response = built.call("DELETE", "/v1/instances/inst-1")

    assert response.status_code == 200, response.text
    assert built.call("GET", "/v1/instances/inst-1").status_code == 404
    assert node.host_nics() == {}
    assert node.br_int_ports() == set()
    assert not {"pf1hpf", "pf2hpf"} & node.dpu_netdevs()
    assert built.call("GET", "/v1/functions").json() == []
