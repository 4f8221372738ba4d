"""A lab host booted from the host image, for integration tests: its disk, its network, its serial ports.

    with host_network(metadata, user_data) as network:
        with HostGuest(image_path, network) as guest:
            ready = guest.wait_for_step(lambda step: step["step"] == "ready", timeout=120)

* :func:`host_network`: a namespace ``dpt-<random>-hostimg`` holding the
  guest's taps (``tap0``, ``tap1``: pyroute2), a busybox udhcpd on each with
  a fixed lease for the guest's MAC, and on ``tap0`` 169.254.169.254, where
  a Python HTTP server (a thread of the test, its socket made inside the
  namespace) serves ``/openstack/latest/meta_data.json`` and ``user_data``.
  The lease carries the metadata service's on-link route and the default
  route as classless static routes, as OVN's DHCP does.
* :class:`HostGuest`: qemu-storage-daemon (in that namespace) exports a
  qcow2 overlay of the image as vhost-user-blk; QEMU (TCG, 256 MiB of shared
  memfd memory, q35) boots it from that disk (bootindex 1) behind root port
  ``rp0`` of a ``pxb-pcie`` expander (bus 64), its first NIC on ``rp1``
  (``tap0``) and ``rp2`` free for hot-plugging. ttyS0 and ttyS1 are unix
  sockets (QEMU the server); ttyS0 is also logged to ``console.log``, which
  the step lines are read from. QEMU runs in the namespace (``ip netns
  exec`` execs it: the child's PID is QEMU's) and is killed by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from dpustack.lab.host_init import step_lines
from dpustack.linux import netns
from netns import namespaces
from qemu_guest import QEMU
from storage_daemons import QSD, Daemon

BUSYBOX = "/usr/bin/busybox"
MEMORY_MIB = 256
METADATA_IP = "169.254.169.254"


@dataclass(frozen=True)
class Subnet:
    """One tap of the namespace (a /24): its address there, the guest's fixed lease and MAC on it."""

    tap: str
    address: str  # the namespace's end, the guest's router
    guest: str
    mac: str


SUBNETS = (Subnet("tap0", "10.0.0.1", "10.0.0.5", "52:54:00:d5:00:01"),
           Subnet("tap1", "10.0.1.1", "10.0.1.5", "52:54:00:d5:00:02"))


@dataclass
class HostNetwork:
    """The namespace, its subnets, and what the metadata server was asked (paths, in order)."""

    namespace: str
    subnets: tuple[Subnet, ...]
    requests: list[str] = field(default_factory=list)


@contextmanager
def host_network(metadata: dict[str, Any], user_data: bytes | None) -> Iterator[HostNetwork]:
    """The guest's network (see the module's docstring); ``user_data`` None: the service answers 404."""
    for tool in (BUSYBOX, QSD, QEMU):
        assert Path(tool).exists(), f"{tool} is missing (apt-get install busybox-static qemu-system-x86)"
    workdir = Path(tempfile.mkdtemp(prefix="hostnet-", dir="/tmp"))
    daemons: list[subprocess.Popen[bytes]] = []
    server: ThreadingHTTPServer | None = None
    with namespaces("hostimg") as names:
        network = HostNetwork(names["hostimg"], SUBNETS)
        try:
            for n, subnet in enumerate(SUBNETS):
                first = n == 0  # the metadata service's
                _tap(network.namespace, subnet.tap, [(subnet.address, 24)] + ([(METADATA_IP, 32)] if first else []))
                daemons.append(_udhcpd(network.namespace, workdir, subnet, metadata_route=first))
            documents = {"/openstack/latest/meta_data.json": json.dumps(metadata).encode()}
            if user_data is not None:
                documents["/openstack/latest/user_data"] = user_data
            server = _metadata_server(network, documents)
            yield network
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            for daemon in daemons:
                if daemon.poll() is None:
                    os.kill(daemon.pid, signal.SIGKILL)
                    daemon.wait(5)
            shutil.rmtree(workdir, ignore_errors=True)


def _tap(namespace: str, name: str, addresses: list[tuple[str, int]]) -> None:
    """A persistent tap in the namespace, up, with ``(address, prefix length)`` on it; QEMU attaches later."""
    with netns.rtnl(namespace) as ipr:
        ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        index = ipr.link_lookup(ifname=name)[0]
        for address, prefix in addresses:
            ipr.addr("add", index=index, address=address, prefixlen=prefix)
        ipr.link("set", index=index, state="up")


def _udhcpd(namespace: str, workdir: Path, subnet: Subnet, *, metadata_route: bool) -> subprocess.Popen[bytes]:
    """busybox udhcpd on the subnet's tap, in the foreground; the guest's MAC always gets ``subnet.guest``."""
    base = subnet.address.rsplit(".", 1)[0]
    routes = f"{METADATA_IP}/32 0.0.0.0 0.0.0.0/0 {subnet.address}" if metadata_route else ""
    config = workdir / f"udhcpd-{subnet.tap}.conf"
    config.write_text(f"""interface {subnet.tap}
start {base}.100
end {base}.150
lease_file {workdir}/udhcpd-{subnet.tap}.leases
pidfile {workdir}/udhcpd-{subnet.tap}.pid
static_lease {subnet.mac} {subnet.guest}
option subnet 255.255.255.0
option router {subnet.address}
option lease 3600
{f"option staticroutes {routes}" if routes else ""}
""")
    log_path, pidfile = workdir / f"udhcpd-{subnet.tap}.log", workdir / f"udhcpd-{subnet.tap}.pid"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(["ip", "netns", "exec", namespace, BUSYBOX, "udhcpd", "-f", str(config)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 5
    while not pidfile.exists():  # written once it has its sockets
        if daemon.poll() is not None or time.monotonic() > deadline:
            if daemon.poll() is None:
                os.kill(daemon.pid, signal.SIGKILL)
                daemon.wait(5)
            raise AssertionError(f"udhcpd on {subnet.tap} did not start: {log_path.read_text()}")
        time.sleep(0.01)
    return daemon


def _metadata_server(network: HostNetwork, documents: dict[str, bytes]) -> ThreadingHTTPServer:
    """HTTP on 169.254.169.254:80 inside the namespace, serving ``documents`` by path (404 otherwise)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            network.requests.append(self.path)
            body = documents.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    listener = netns.socket_in(network.namespace, socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((METADATA_IP, 80))
    listener.listen(16)
    server = ThreadingHTTPServer((METADATA_IP, 80), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


class HostGuest:
    """A QEMU guest booting the host image (see the module's docstring), killed on the way out."""

    def __init__(self, image: Path, network: HostNetwork):
        self.image = image
        self.network = network
        self.workdir = Path(tempfile.mkdtemp(prefix="hostvm-", dir="/tmp"))  # short: unix socket paths
        self.console_log = self.workdir / "console.log"
        self.console_socket = self.workdir / "console.sock"
        self.agent_socket = self.workdir / "agent.sock"
        self.qmp_socket = self.workdir / "qmp.sock"
        self.disk_socket = self.workdir / "boot.sock"
        self.storage: Daemon | None = None
        self.qemu: subprocess.Popen[bytes] | None = None
        self.launched = 0.0

    def __enter__(self) -> "HostGuest":
        try:
            overlay = self.workdir / "boot.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image), "-F", "raw",
                            str(overlay)], check=True)
            self.storage = Daemon(self.network.namespace, self.workdir, "qsd", [
                "--blockdev", f"driver=file,node-name=file0,filename={overlay}",
                "--blockdev", "driver=qcow2,node-name=boot,file=file0",
                "--export", f"type=vhost-user-blk,id=boot,node-name=boot,writable=on,"
                            f"addr.type=unix,addr.path={self.disk_socket}"]).start()
            self.launch()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def argv(self) -> list[str]:
        first = self.network.subnets[0]
        return [QEMU, "-accel", "tcg", "-machine", "q35,memory-backend=mem", "-cpu", "max", "-smp", "1",
                "-m", f"{MEMORY_MIB}M", "-object", f"memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on",
                "-nodefaults", "-display", "none", "-no-reboot",
                "-chardev", f"socket,id=console,path={self.console_socket},server=on,wait=off,"
                            f"logfile={self.console_log}",
                "-serial", "chardev:console",
                "-chardev", f"socket,id=agent,path={self.agent_socket},server=on,wait=off",
                "-serial", "chardev:agent",
                "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
                "-device", "pxb-pcie,id=pxb0,bus_nr=64,bus=pcie.0",
                *(arg for n in range(3) for arg in
                  ("-device", f"pcie-root-port,id=rp{n},bus=pxb0,chassis={n + 1},addr={n:#x}")),
                "-chardev", f"socket,id=disk0,path={self.disk_socket}",
                "-device", "vhost-user-blk-pci,id=disk0,chardev=disk0,num-queues=1,bus=rp0,bootindex=1",
                "-netdev", f"tap,id=net0,ifname={first.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,id=nic0,netdev=net0,mac={first.mac},bus=rp1,romfile="]

    def launch(self) -> None:
        log = (self.workdir / "qemu.log").open("wb")
        self.launched = time.monotonic()
        self.qemu = subprocess.Popen(["ip", "netns", "exec", self.network.namespace, *self.argv()],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def close(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            os.kill(self.qemu.pid, signal.SIGKILL)
            self.qemu.wait(10)
        if self.storage is not None:
            self.storage.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------- console
    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def steps(self) -> list[dict]:
        return step_lines(self.console())

    def wait_for_step(self, matches: Callable[[dict], bool], timeout: float, *, after: int = 0) -> dict:
        """The first step line (from the ``after``-th on) that ``matches``; AssertionError with the console
        and QEMU's log if none does within ``timeout`` s or QEMU ends."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((step for step in self.steps()[after:] if matches(step)), None)
            if found is not None:
                return found
            assert self.qemu is not None
            if self.qemu.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no such step line within {timeout:g} s (QEMU exit {self.qemu.poll()}); "
                                     f"console:\n{self.console()[-4000:]}\nqemu:\n{self.qemu_log()[-2000:]}")
            time.sleep(0.05)

    def qemu_log(self) -> str:
        path = self.workdir / "qemu.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ----------------------------------------------------------------- QMP
    def qmp(self, command: str, **arguments: Any) -> Any:
        with QEMUMonitorProtocol(str(self.qmp_socket)) as monitor:
            monitor.connect()
            return monitor.cmd(command, **arguments)

    def pci_address(self, qdev_id: str) -> str:
        """The guest's PCI address of device ``qdev_id`` (bus numbers as the firmware gave them), from
        QMP query-pci."""
        def walk(devices: list[dict]) -> Iterator[dict]:
            for device in devices:
                yield device
                yield from walk(device.get("pci_bridge", {}).get("devices", []))

        for bus in self.qmp("query-pci"):
            for device in walk(bus["devices"]):
                if device.get("qdev_id") == qdev_id:
                    return f"0000:{device['bus']:02x}:{device['slot']:02x}.{device['function']:x}"
        raise AssertionError(f"QEMU has no PCI device {qdev_id}")
