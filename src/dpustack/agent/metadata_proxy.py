"""The metadata proxy: 169.254.169.254 for the instances this node hosts.

For every network this node has a port on, the agent keeps:

* a namespace ``<prefix><network id>`` holding one end of a veth pair, with
  the address 169.254.169.254/32, the network's metadata MAC and an on-link
  default route (instances reach it on-link too, see :mod:`dpustack.metadata_port`);
* the other end plugged into the bridge with ``iface-id`` = the network's
  metadata localport, so ovn-controller binds the localport on this chassis;
* an HTTP server on a socket bound inside that namespace. Only a short-lived
  thread ever enters the namespace (to bind); the threads that serve stay in
  the agent's own namespace, so they reach the controller as usual.

Each request goes to the controller's ``/v1/metadata/`` with the network id
and the source address the proxy saw. The controller finds the instance from
that pair alone; OVN port security keeps an instance from sending with the
address of another port, so an instance can only ever get its own metadata.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from pyroute2 import IPRoute

from dpustack import metadata_port
from dpustack.agent.config import MetadataSection
from dpustack.drivers.switch import SwitchDriver
from dpustack.errors import DriverError
from dpustack.linux import netns

log = logging.getLogger(__name__)

_ROLE = "dpustack:role"
_NETWORK = "dpustack:network_id"

#: (status, content type, body) of one answer
Answer = tuple[int, str, bytes]
Forward = Callable[[str, str, str], Answer]


def _link_names(network_id: str) -> tuple[str, str]:
    """(bridge end, namespace end) of a network's veth pair; at most 15 characters each."""
    short = network_id.replace("-", "")[:12]
    return f"mtd{short}", f"mtn{short}"


class ControllerForward:
    """Asks the controller for the metadata of the instance at (network, source address)."""

    def __init__(self, url: str, timeout: float, *, auth: httpx.Auth, verify: ssl.SSLContext | bool = True):
        self._client = httpx.Client(base_url=url, auth=auth, verify=verify, timeout=timeout)

    def __call__(self, network_id: str, source_ip: str, path: str) -> Answer:
        try:
            answer = self._client.get(f"/v1/metadata/{path}",
                                      headers={metadata_port.NETWORK_HEADER: network_id, "X-Forwarded-For": source_ip})
        except httpx.HTTPError as exc:
            log.warning("metadata for %s on network %s: controller unreachable: %s", source_ip, network_id, exc)
            return 502, "text/plain", b"the metadata service cannot reach the controller\n"
        return answer.status_code, answer.headers.get("content-type", "application/octet-stream"), answer.content

    def close(self) -> None:
        self._client.close()


class _Handler(BaseHTTPRequestHandler):
    server: "_MetadataServer"
    server_version = "dpustack-metadata"

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        path = self.path.split("?", 1)[0].strip("/")
        status, content_type, body = self.server.forward(self.server.network_id, self.client_address[0], path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metadata %s: " + format, self.server.network_id, *args)


class _MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listening: socket.socket, network_id: str, forward: Forward):
        super().__init__(listening.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening  # bound inside the network's namespace
        self.network_id = network_id
        self.forward = forward
        self.thread = threading.Thread(target=self.serve_forever, name=f"metadata-{network_id[:8]}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


def bind_in_namespace(namespace: str, address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket bound inside the named namespace."""
    try:
        listening = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM)
    except netns.NetnsError as exc:
        raise DriverError(f"metadata: cannot listen on {address[0]}:{address[1]} in namespace '{namespace}': "
                          f"{exc.message}") from exc
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(64)
    except OSError as exc:
        listening.close()
        raise DriverError(f"metadata: cannot listen on {address[0]}:{address[1]} in namespace '{namespace}': "
                          f"{exc}") from exc
    return listening


class MetadataProxies:
    """The metadata datapath and server of every network this node serves; ``sync`` converges them."""

    def __init__(self, config: MetadataSection, switch: SwitchDriver, bridge: str, forward: Forward):
        self._config = config
        self._switch = switch
        self._bridge = bridge
        self._forward = forward
        self._servers: dict[str, _MetadataServer] = {}
        self._lock = threading.Lock()

    def namespace(self, network_id: str) -> str:
        return f"{self._config.namespace_prefix}{network_id}"

    def sync(self, networks: set[str]) -> list[str]:
        """Serve exactly ``networks``; return what had to be set up or taken down."""
        changes = []
        with self._lock:
            for network_id in sorted(networks):
                changes += self._ensure(network_id)
            for network_id in sorted(self._present() - networks):
                self._remove(network_id)
                changes.append(f"stopped metadata for network {network_id}")
        return changes

    def ensure(self, network_id: str) -> list[str]:
        """Serve one network (idempotent); return what had to be done."""
        with self._lock:
            return self._ensure(network_id)

    def close(self) -> None:
        """Stop the servers; namespaces and ports stay for the next agent process to take over."""
        with self._lock:
            for server in self._servers.values():
                server.stop()
            self._servers.clear()

    # -- one network ---------------------------------------------------------------
    def _ensure(self, network_id: str) -> list[str]:
        done = []
        namespace = self.namespace(network_id)
        outer, inner = _link_names(network_id)
        recreated = not (netns.exists(namespace) and netns.find_link(namespace, inner) is not None)
        if recreated:
            self._stop_server(network_id)
            self._make_datapath(network_id, namespace, outer, inner)
            done.append(f"set up the metadata namespace {namespace}")
        wanted = {"iface-id": metadata_port.port_name(network_id), _ROLE: "metadata", _NETWORK: network_id}
        plugged = {p.name: p.external_ids for p in self._switch.list_ports(self._bridge)}.get(outer)
        if recreated or plugged is None or any(plugged.get(k) != v for k, v in wanted.items()):
            if plugged is not None:  # the userspace datapath keeps reading a deleted netdev: reopen it
                self._switch.del_port(self._bridge, outer)
            self._switch.add_port(self._bridge, outer, wanted)
            done.append(f"plugged {outer} as metadata port of network {network_id}")
        server = self._servers.get(network_id)
        if server is None or not server.thread.is_alive():
            listening = bind_in_namespace(namespace, (metadata_port.METADATA_IP, metadata_port.METADATA_PORT))
            self._servers[network_id] = _MetadataServer(listening, network_id, self._forward)
            done.append(f"serving metadata for network {network_id}")
        return done

    def _make_datapath(self, network_id: str, namespace: str, outer: str, inner: str) -> None:
        netns.create(namespace)
        with self._bridge_rtnl() as ipr:
            for index in ipr.link_lookup(ifname=outer):
                ipr.link("del", index=index)
            ipr.link("add", ifname=outer, kind="veth", peer={"ifname": inner, "net_ns_fd": namespace})
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], state="up")
        with netns.rtnl(namespace) as ipr:
            index = ipr.link_lookup(ifname=inner)[0]
            ipr.link("set", index=index, address=metadata_port.port_mac(network_id), state="up")
            ipr.addr("add", index=index, address=metadata_port.METADATA_IP, prefixlen=32)
            ipr.route("replace", dst="0.0.0.0/0", oif=index, scope="link")  # instances are on-link
        # the userspace datapath does not fill in checksums: TCP needs TX offload off on both ends
        self._ethtool_tx_off(outer)
        netns.run(namespace, ["ethtool", "-K", inner, "tx", "off"])

    def _remove(self, network_id: str) -> None:
        self._stop_server(network_id)
        outer, _ = _link_names(network_id)
        self._switch.del_port(self._bridge, outer, if_exists=True)
        netns.delete(self.namespace(network_id))  # the veth pair goes with it

    def _stop_server(self, network_id: str) -> None:
        server = self._servers.pop(network_id, None)
        if server is not None:
            server.stop()

    def _present(self) -> set[str]:
        """Networks with a server, a namespace or a switch port of this proxy."""
        prefix = self._config.namespace_prefix
        found = set(self._servers)
        found |= {name[len(prefix):] for name in netns.names() if name.startswith(prefix)}
        found |= {p.external_ids[_NETWORK] for p in self._switch.list_ports(self._bridge)
                  if p.external_ids.get(_ROLE) == "metadata" and _NETWORK in p.external_ids}
        return found

    # -- the namespace of the bridge ------------------------------------------------
    @contextmanager
    def _bridge_rtnl(self) -> Iterator[IPRoute]:
        if self._config.dpu_netns:
            with netns.rtnl(self._config.dpu_netns) as ipr:
                yield ipr
        else:
            ipr = IPRoute()
            try:
                yield ipr
            finally:
                ipr.close()

    def _ethtool_tx_off(self, ifname: str) -> None:
        if self._config.dpu_netns:
            netns.run(self._config.dpu_netns, ["ethtool", "-K", ifname, "tx", "off"])
        else:
            subprocess.run(["ethtool", "-K", ifname, "tx", "off"], capture_output=True, check=True, timeout=10)
