"""The lab's data plane: OVN central, DPU nodes (OVS userspace datapath + ovn-controller), underlay, hosts.

    plane = DataPlane(Path("/tmp/lab"), prefix="lab").start()    # OVN central + underlay namespace
    dpu1 = plane.add_dpu("dpu-1", "192.168.100.1", serial="MT0001")  # ns, ovsdb, vswitchd, ovn-controller
    host1 = plane.add_host("host-1")                                 # an empty namespace (a BM server)
    host2 = plane.add_host("host-2", machine=True)                   # + a private libvirtd for its machine
    ...
    plane.stop()                                                     # kill by PID, delete namespaces

What runs where:

* :class:`OvnCentral` — NB and SB ovsdb-servers and ovn-northd on unix
  sockets in its directory (no network namespace needed).
* :class:`Underlay` — a namespace holding a Linux bridge ``ulbr``; every DPU
  gets a veth whose DPU end is ``ul0`` and whose other end is a port of
  ``ulbr``: the lab's "physical" network between DPUs.
* :class:`DpuNode` — a namespace with its own ovsdb-server, ovs-vswitchd
  (``datapath_type=netdev``: the kernel module cannot be loaded here) and
  ovn-controller. Userspace (native) tunnelling needs the tunnel endpoint
  address on an OVS *netdev bridge*: ovs-vswitchd resolves the Geneve
  destination through its own route table (``ovs/route/show``, cached from
  the kernel routes of its namespace) and its own neighbour table
  (``tnl/neigh/show``, learnt by snooping ARP on that bridge), then emits
  the encapsulated packet out of that bridge's ports. So ``ul0`` is a port of
  bridge ``br-phy`` and the underlay address sits on ``br-phy``'s tap
  device, not on ``ul0``. The underlay namespace also holds ``mgbr``, the
  hosts' management network: a host given a ``management_ip`` has ``mgmt0``
  on it (live migrations between VM hosts go there).
* A host is a namespace; the lab function driver plugs "PFs" into it. With
  ``machine=True`` the namespace also runs a private libvirtd
  (:mod:`dpustack.lab.libvirt_daemon`) for the host's machine, a libvirt
  domain the function driver hot-plugs the functions into.

Every process started is recorded by its pidfile in its own directory and
killed by PID (after checking the PID still runs a command naming that
directory). Starting an object over a directory or namespace left behind by a
crash first cleans those leftovers up.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from dpustack.lab.daemon_pids import alive, kill_pid, mentions
from dpustack.lab.guest_kernel import cache_dir
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.lab.state import LabError
from dpustack.lab.storage_node import QMP_SOCKET, StorageNode, daemon_argv, vhost_dir
from dpustack.linux import netns

OVN_SCHEMAS = Path("/usr/share/ovn")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
UNDERLAY_BRIDGE = "ulbr"
UNDERLAY_IFNAME = "ul0"
PHYSICAL_BRIDGE = "br-phy"
INTEGRATION_BRIDGE = "br-int"
UNDERLAY_PREFIXLEN = 24
MANAGEMENT_BRIDGE = "mgbr"
MANAGEMENT_IFNAME = "mgmt0"


def metadata_prefix(dpu_netns: str) -> str:
    """The prefix of the metadata namespaces the agent of a DPU makes (removed with the DPU)."""
    return f"{dpu_netns}-meta-"


class DataplaneError(LabError):
    """A data plane daemon or namespace could not be set up."""


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


class _Daemons:
    """Daemons started with ``--detach --pidfile=<dir>/<name>.pid``, all stopped by PID."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.env = {**os.environ, "PATH": _path(), "OVS_RUNDIR": str(self.dir), "OVS_LOGDIR": str(self.dir),
                    "OVS_DBDIR": str(self.dir), "OVN_RUNDIR": str(self.dir), "OVN_LOGDIR": str(self.dir)}

    def run(self, *args: str, timeout: float = 30, check: bool = True) -> str:
        try:
            done = subprocess.run(args, env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DataplaneError(f"`{' '.join(args)}` did not finish within {timeout:g}s{self.log_tails()}") from exc
        if check and done.returncode != 0:
            raise DataplaneError(f"`{' '.join(args)}` failed (exit {done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()}{self.log_tails()}")
        return done.stdout

    def options(self, name: str, *, unixctl: bool = True) -> list[str]:
        """Daemon options; ovn-controller has no --unixctl (its socket is OVN_RUNDIR/ovn-controller.<pid>.ctl)."""
        control = [f"--unixctl={self.dir / f'{name}.ctl'}"] if unixctl else []
        return [f"--pidfile={self.dir / f'{name}.pid'}", *control, f"--log-file={self.dir / f'{name}.log'}",
                "--detach"]

    def pids(self) -> dict[str, int]:
        """PIDs of this directory's daemons that are still running, by daemon name."""
        found = {}
        for pidfile in sorted(self.dir.glob("*.pid")):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if alive(pid) and mentions(pid, str(self.dir)):
                found[pidfile.stem] = pid
        return found

    def stop(self, order: list[str] | None = None) -> None:
        """Kill every daemon of the directory, those named in ``order`` first, in that order."""
        running = self.pids()
        names = [n for n in (order or []) if n in running] + sorted(set(running) - set(order or []))
        for name in names:
            kill_pid(running[name], str(self.dir))
            (self.dir / f"{name}.pid").unlink(missing_ok=True)

    def log_tails(self, lines: int = 10) -> str:
        tails = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"\n--- {log.name} ---\n" + "\n".join(text))
        return "".join(tails)


class OvnCentral:
    """OVN NB + SB ovsdb-servers and ovn-northd. ``start()``, always ``stop()``; ``nb``/``sb`` are connections."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nb = f"unix:{self.dir / 'nb.sock'}"
        self.sb = f"unix:{self.dir / 'sb.sock'}"
        self._daemons = _Daemons(self.dir)
        self.env = self._daemons.env

    def _db(self, name: str, schema: str) -> None:
        db = self.dir / f"{name}.db"
        db.unlink(missing_ok=True)
        self._daemons.run("ovsdb-tool", "create", str(db), str(OVN_SCHEMAS / schema))
        self._daemons.run("ovsdb-server", f"--remote=punix:{self.dir / f'{name}.sock'}",
                          *self._daemons.options(name), str(db))

    def start(self) -> "OvnCentral":
        self.stop()  # leftovers of a crashed run in this directory
        try:
            self._db("nb", "ovn-nb.ovsschema")
            self._db("sb", "ovn-sb.ovsschema")
            self._daemons.run("ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}",
                              *self._daemons.options("northd"))
            self.nbctl("init")
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> dict[str, int]:
        return self._daemons.pids()

    def nbctl(self, *args: str) -> str:
        return self._daemons.run("ovn-nbctl", f"--db={self.nb}", "--timeout=20", *args).strip()

    def sbctl(self, *args: str) -> str:
        return self._daemons.run("ovn-sbctl", f"--db={self.sb}", "--timeout=20", *args).strip()

    def stop(self) -> None:
        self._daemons.stop(["northd", "sb", "nb"])


class Underlay:
    """A namespace with a Linux bridge ``ulbr`` into which every DPU's ``ul0`` is wired."""

    def __init__(self, namespace: str):
        self.netns = namespace

    def start(self) -> "Underlay":
        netns.delete(self.netns)  # a crashed run's bridge and veth ends go with it
        netns.create(self.netns)
        with netns.rtnl(self.netns) as ipr:
            for bridge in (UNDERLAY_BRIDGE, MANAGEMENT_BRIDGE):
                ipr.link("add", ifname=bridge, kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname=bridge)[0], state="up")
        return self

    def attach(self, dpu_netns: str, port: str) -> None:
        """A veth: ``ul0`` in ``dpu_netns``, ``port`` on ``ulbr`` here; both up, TX checksum offload off."""
        self._wire(dpu_netns, port, UNDERLAY_IFNAME, UNDERLAY_BRIDGE)
        netns.run(self.netns, ["ethtool", "-K", port, "tx", "off"])
        netns.run(dpu_netns, ["ethtool", "-K", UNDERLAY_IFNAME, "tx", "off"])

    def attach_host(self, host_netns: str, port: str, address: str) -> None:
        """A veth: ``mgmt0`` in ``host_netns`` with ``address``/24, ``port`` on ``mgbr`` here; both up."""
        self._wire(host_netns, port, MANAGEMENT_IFNAME, MANAGEMENT_BRIDGE)
        with netns.rtnl(host_netns) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname=MANAGEMENT_IFNAME)[0], address=address,
                     prefixlen=UNDERLAY_PREFIXLEN)

    def _wire(self, other_netns: str, port: str, ifname: str, bridge: str) -> None:
        """A veth: ``ifname`` in ``other_netns``, ``port`` on ``bridge`` here; both up."""
        with netns.rtnl(self.netns) as ipr:
            for index in ipr.link_lookup(ifname=port):
                ipr.link("del", index=index)
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": ifname, "net_ns_fd": other_netns})
            index = ipr.link_lookup(ifname=port)[0]
            ipr.link("set", index=index, master=ipr.link_lookup(ifname=bridge)[0])
            ipr.link("set", index=index, state="up")
        with netns.rtnl(other_netns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")

    def stop(self) -> None:
        netns.delete(self.netns)


class DpuNode:
    """One DPU: a namespace running ovsdb-server, ovs-vswitchd (netdev datapath) and ovn-controller,
    and with ``storage`` the DPU's qemu-storage-daemon.

    ``name`` is the OVN chassis name (``system-id``); ``dir`` holds the
    database, sockets, pidfiles and logs; ``db`` is the OVSDB connection the
    switch driver uses.
    """

    def __init__(self, name: str, dir: Path, underlay_ip: str, *, netns_name: str | None = None,
                 serial: str | None = None, storage: bool = False, underlay_port: str | None = None):
        self.name = name
        self.dir = Path(dir)
        self.storage = storage  # also run the DPU's qemu-storage-daemon (QMP socket ``qsd``)
        self.qsd = self.dir / QMP_SOCKET
        self.vhost_dir = vhost_dir(self.dir)
        self.underlay_ip = underlay_ip
        self.underlay_port = underlay_port or f"ul-{underlay_ip.rsplit('.', 1)[1]}"  # its port on the underlay
        self.netns = netns_name or name
        self.serial = serial or name
        self.db = f"unix:{self.dir / 'db.sock'}"
        self._daemons = _Daemons(self.dir)

    # ---------------------------------------------------------------- start
    def start(self, sb: str, underlay: Underlay | None = None) -> "DpuNode":
        self.stop()  # leftovers of a crashed run: daemons by pidfile, the namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            netns.create(self.netns)
            if underlay is not None:
                underlay.attach(self.netns, self.underlay_port)
            db = self.dir / "conf.db"
            db.unlink(missing_ok=True)
            self._daemons.run("ovsdb-tool", "create", str(db), str(OVS_SCHEMA))
            self._in_ns("ovsdb-server", str(db), f"--remote=punix:{self.dir / 'db.sock'}",
                        *self._daemons.options("ovsdb-server"))
            self.vsctl("--no-wait", "init")
            self.vsctl("--no-wait", "set", "open", ".", f"external_ids:system-id={self.name}",
                       f"external_ids:ovn-remote={sb}", "external_ids:ovn-encap-type=geneve",
                       f"external_ids:ovn-encap-ip={self.underlay_ip}",
                       "external_ids:ovn-bridge-datapath-type=netdev",
                       f"external_ids:ovn-cms-options=card-serial-number={self.serial}")
            self._in_ns("ovs-vswitchd", self.db, *self._daemons.options("ovs-vswitchd"), "--disable-system")
            if underlay is not None:
                self._physical_bridge()
            self._in_ns("ovn-controller", self.db, *self._daemons.options("ovn-controller", unixctl=False))
            if self.storage:
                self.vhost_dir.mkdir(exist_ok=True)
                self._in_ns(*daemon_argv(self.dir))
        except BaseException:
            self.stop()
            raise
        return self

    def _physical_bridge(self) -> None:
        """``br-phy`` (netdev) with ``ul0`` as its port and the underlay address on its tap device."""
        self.vsctl("--may-exist", "add-br", PHYSICAL_BRIDGE, "--", "set", "bridge", PHYSICAL_BRIDGE,
                   "datapath_type=netdev", "--", "--may-exist", "add-port", PHYSICAL_BRIDGE, UNDERLAY_IFNAME)
        deadline = time.monotonic() + 10
        while netns.find_link(self.netns, PHYSICAL_BRIDGE) is None:
            if time.monotonic() > deadline:
                raise DataplaneError(f"{self.name}: ovs-vswitchd did not create {PHYSICAL_BRIDGE}"
                                     f"{self._daemons.log_tails()}")
            time.sleep(0.05)
        netns.run(self.netns, ["ip", "addr", "replace", f"{self.underlay_ip}/{UNDERLAY_PREFIXLEN}",
                               "dev", PHYSICAL_BRIDGE])
        netns.run(self.netns, ["ip", "link", "set", PHYSICAL_BRIDGE, "up"])
        if self.storage:  # QEMU's NBD server sets no TCP_NODELAY: without quick ACKs a connect waits twice ~40 ms
            subnet = f"{self.underlay_ip.rsplit('.', 1)[0]}.0/{UNDERLAY_PREFIXLEN}"
            netns.run(self.netns, ["ip", "route", "replace", subnet, "dev", PHYSICAL_BRIDGE, "src", self.underlay_ip,
                                   "quickack", "1"])

    def _in_ns(self, *args: str) -> str:
        return self._daemons.run("ip", "netns", "exec", self.netns, *args)

    # ------------------------------------------------------------- commands
    def vsctl(self, *args: str) -> str:
        return self._daemons.run("ovs-vsctl", f"--db={self.db}", "--timeout=20", *args).rstrip("\n")

    def appctl(self, target: str, *args: str) -> str:
        """``ovs-appctl`` to one of this node's daemons (``ovs-vswitchd``, ``ovn-controller``)."""
        program = "ovn-appctl" if target.startswith("ovn") else "ovs-appctl"
        socket = self.dir / f"{target}.ctl"
        if target == "ovn-controller":
            socket = self.dir / f"ovn-controller.{self.pids().get('ovn-controller')}.ctl"
        return self._daemons.run(program, "-t", str(socket), *args).rstrip("\n")

    def ofctl(self, *args: str) -> str:
        return self._daemons.run("ovs-ofctl", *args).rstrip("\n")  # br-int.mgmt is in OVS_RUNDIR

    def wait_for_bridge(self, bridge: str = INTEGRATION_BRIDGE, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while bridge not in self.vsctl("list-br").split():
            if time.monotonic() > deadline:
                raise DataplaneError(f"{self.name}: {bridge} did not appear{self._daemons.log_tails()}")
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        return self._daemons.pids()

    def log_tails(self, lines: int = 10) -> str:
        return self._daemons.log_tails(lines)

    # ----------------------------------------------------------------- stop
    def stop(self) -> None:
        """Kill the daemons by PID, then delete the namespace (its veths go with it) and the metadata
        namespaces of its agent. Idempotent."""
        try:
            if self.dir.exists():
                self._daemons.stop(["ovn-controller", "ovs-vswitchd", "ovsdb-server"])
        finally:
            for name in netns.names():
                if name.startswith(metadata_prefix(self.netns)):
                    netns.delete(name)
            netns.delete(self.netns)


class DataPlane:
    """OVN central, the underlay, DPU nodes and host namespaces of one lab, all under ``dir``.

    ``prefix`` names the namespaces (``<prefix>-ul``, ``<prefix>-<dpu>``,
    ``<prefix>-<host>``). What was created is recorded in ``dir/dataplane.json``
    as it is created, so a ``start()`` after a crash (same ``dir``) removes
    the leftovers before starting again.
    """

    RECORD = "dataplane.json"

    def __init__(self, dir: Path, prefix: str = "lab", *, storage: bool = False):
        self.dir = Path(dir)
        self.prefix = prefix
        self.central = OvnCentral(self.dir / "ovn")
        self.underlay = Underlay(f"{prefix}-ul")
        # with ``storage``: a storage node on the underlay, and a qemu-storage-daemon on every DPU
        self.storage = StorageNode(self.dir / "storage", f"{prefix}-st") if storage else None
        self.dpus: dict[str, DpuNode] = {}
        self.hosts: dict[str, str] = {}  # host name -> namespace
        self.libvirtds: dict[str, LibvirtDaemon] = {}  # host name -> the libvirtd of its machine

    @property
    def record(self) -> Path:
        return self.dir / self.RECORD

    def start(self) -> "DataPlane":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cleanup_leftovers()
        try:
            self._save()
            self.central.start()
            self.underlay.start()
            if self.storage is not None:
                self.storage.start(lambda namespace: self.underlay.attach(namespace, "ul-st"))
        except BaseException:
            self.stop()
            raise
        return self

    def add_dpu(self, name: str, underlay_ip: str, *, serial: str | None = None,
                netns_name: str | None = None) -> DpuNode:
        """Start a DPU node; its namespace is ``netns_name``, by default ``<prefix>-<name>``."""
        node = DpuNode(name, self.dir / name, underlay_ip, netns_name=netns_name or f"{self.prefix}-{name}",
                       serial=serial, storage=self.storage is not None, underlay_port=f"ul-{len(self.dpus) + 1}")
        self.dpus[name] = node
        self._save()
        node.start(self.central.sb, self.underlay)
        return node

    def add_host(self, name: str, *, netns_name: str | None = None, machine: bool = False,
                 management_ip: str = "") -> str:
        """Create a host namespace, ``netns_name`` or by default ``<prefix>-<name>``, with ``machine`` and its
        libvirtd (``libvirtds[name]``) running; return its name. With ``management_ip`` the host is on the
        management network at that address, where its libvirtd receives live migrations."""
        namespace = netns_name or f"{self.prefix}-{name}"
        self.hosts[name] = namespace
        if machine:
            self.libvirtds[name] = LibvirtDaemon(self.dir / name / "libvirt", namespace,
                                                 cache=cache_dir() / "libvirt", migration_host=management_ip)
        self._save()
        netns.delete(namespace)
        netns.create(namespace)
        if management_ip:
            self.underlay.attach_host(namespace, f"mg-{management_ip.rsplit('.', 1)[1]}", management_ip)
        if machine:
            self.libvirtds[name].start()
        return namespace

    def namespaces(self) -> list[str]:
        storage = [self.storage.netns] if self.storage is not None else []
        return [node.netns for node in self.dpus.values()] + list(self.hosts.values()) + storage + [self.underlay.netns]

    def _save(self) -> None:
        data = {"prefix": self.prefix, "central": str(self.central.dir),
                "dpus": {n: {"dir": str(d.dir), "netns": d.netns, "underlay_ip": d.underlay_ip,
                             "underlay_port": d.underlay_port, "serial": d.serial, "storage": d.storage}
                         for n, d in self.dpus.items()},
                "hosts": self.hosts, "underlay": self.underlay.netns,
                "libvirtds": {n: {"dir": str(d.dir), "netns": d.netns} for n, d in self.libvirtds.items()},
                "storage": {"dir": str(self.storage.dir), "netns": self.storage.netns} if self.storage else None}
        partial = self.record.with_suffix(".tmp")
        partial.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(partial, self.record)

    @classmethod
    def reboot_dpu(cls, dir: Path, name: str) -> DpuNode:
        """A SoC reboot of DPU ``name`` of the running data plane recorded in ``dir``: its daemons are killed
        and its namespace deleted, so its switch ports, representors, storage exports, metadata namespaces and
        underlay link go; then it starts as it first did, with a new switch database (a harsher reboot than
        a BlueField's, whose eMMC keeps ``conf.db``). The host namespaces are not touched."""
        try:
            data = json.loads((Path(dir) / cls.RECORD).read_text())
            info = data["dpus"][name]
        except (OSError, ValueError) as exc:
            raise DataplaneError(f"no data plane is recorded in {dir}: {exc}") from exc
        except KeyError as exc:
            raise DataplaneError(f"the data plane in {dir} has no DPU '{name}'") from exc
        node = DpuNode(name, Path(info["dir"]), info["underlay_ip"], netns_name=info["netns"],
                       serial=info["serial"], storage=info["storage"], underlay_port=info["underlay_port"])
        return node.start(OvnCentral(Path(data["central"])).sb, Underlay(data["underlay"]))

    def cleanup_leftovers(self) -> None:
        """Kill the daemons and delete the namespaces a previous (crashed) run recorded in ``dir``."""
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return
        for info in data.get("libvirtds", {}).values():
            LibvirtDaemon(Path(info["dir"]), info["netns"]).stop()
        for info in data.get("dpus", {}).values():
            DpuNode("leftover", Path(info["dir"]), "0.0.0.0", netns_name=info["netns"]).stop()
        OvnCentral(Path(data.get("central", self.dir / "ovn"))).stop()
        if data.get("storage"):
            StorageNode(Path(data["storage"]["dir"]), data["storage"]["netns"]).stop()
        for namespace in [*data.get("hosts", {}).values(), data.get("underlay")]:
            if namespace:
                netns.delete(namespace)
        self.record.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop every daemon by PID and delete every namespace (with their veths). Idempotent."""
        errors = []
        storage = [self.storage.stop] if self.storage is not None else []
        for step in [*(daemon.stop for daemon in self.libvirtds.values()),
                     *(node.stop for node in self.dpus.values()), *storage, self.central.stop,
                     *(lambda ns=ns: netns.delete(ns) for ns in self.hosts.values()), self.underlay.stop]:
            try:
                step()
            except Exception as exc:  # keep tearing down; report at the end
                errors.append(exc)
        if not errors:
            self.record.unlink(missing_ok=True)
        if errors:
            raise DataplaneError(f"data plane teardown: {'; '.join(str(e) for e in errors)}")

    def __enter__(self) -> "DataPlane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
