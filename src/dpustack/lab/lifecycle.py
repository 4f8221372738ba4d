"""`lab up/down/status`: a controller, a storage node's qemu-storage-daemon and N bare-metal agents as real
local processes.

With ``dataplane="ovn"`` the lab also runs a real data plane (:mod:`dpustack.lab.dataplane`): the OVN
central, an underlay namespace, a storage node namespace on it (:mod:`dpustack.lab.storage_node`: the
qemu-storage-daemon serving volumes over NBD), per node a DPU namespace (ovsdb-server, ovs-vswitchd on the
userspace datapath, ovn-controller whose system-id is the node's hostname, the DPU's qemu-storage-daemon)
and a host namespace whose private libvirtd runs the host machine (:mod:`dpustack.lab.host_machine`: a
QEMU guest, off until its BMC powers it on, booting from the volume its storage function serves), plus
one BMC emulator per node driving that machine (Redfish for odd nodes, IPMI for even ones); a VM node's
host namespace instead runs the libvirtd its VMs run under, and is on the hosts' management network
(192.168.101.<n>, where VMs migrating live to it arrive). The
controller then keeps volumes with the qcow2 backend and the agents serve them with the qsd storage
driver; the lab's image is the lab host image (:mod:`dpustack.lab.host_image`). Every daemon is recorded
in lab.json; `down` stops them by PID (the machines with their libvirtd) and deletes the namespaces.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import httpx

from dpustack.client import Client
from dpustack.lab import bmcs, processes
from dpustack.lab.agents import AgentSpec, HostMachineSpec, NodeDataplane, VmHost, bluefield_serial, write_config
from dpustack.lab.dataplane import DataPlane, DpuNode
from dpustack.lab.host_image import build_host_image
from dpustack.lab.host_machine import MEMORY_MIB, VCPUS, define_host
from dpustack.lab.image import write_boot_image
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.lab.pki import LabCa
from dpustack.lab.state import LabError, LabProcess, LabState, locked
from dpustack.lab.storage_node import DAEMON, StorageNode
from dpustack.linux import netns

Say = Callable[[str], None]

IMAGE_FILE = "boot.img"
# What a lab owns inside its directory; `up` starts from a clean slate, `down` keeps the logs.
_DATA = ("controller", "nodes", "dp", "pki", "storage", IMAGE_FILE)
_PKI_DIR = "pki"  # the lab CA, the controller's and every node's certificate
_DP_DIR = "dp"  # the OVN data plane's daemons: short, their unix socket paths must fit in 107 bytes
_STORAGE_DIR = "storage"  # the memory lab's storage node daemon
DATAPLANES = ("memory", "ovn")
NETNS_PREFIX = "dpustack-lab"  # the underlay namespace is dpustack-lab-ul
MAX_OVN_NODES = 200  # underlay addresses 192.168.100.<n>
_LOGS = "logs"
CONTROLLER_TIMEOUT = 60.0
NODES_TIMEOUT = 90.0


def _quiet(_: str) -> None:
    """The default `say`: print nothing."""


def is_running(state: LabState) -> bool:
    """True when every recorded process of the lab is alive."""
    return bool(state.processes) and all(processes.is_alive(p.pid, p.started) for p in state.processes)


def dpu_netns(hostname: str) -> str:
    """The DPU namespace of a node of the OVN lab: its hostname (dpu-bm-1)."""
    return hostname


def host_netns(hostname: str) -> str:
    """The host namespace of a node of the OVN lab (dpu-bm-1 -> host-bm-1, dpu-vm-1 -> host-vm-1)."""
    return "host-" + hostname.removeprefix("dpu-")


def is_vm_node(hostname: str) -> bool:
    """Whether a lab node runs VMs (dpu-vm-1) rather than a bare-metal host (dpu-bm-1)."""
    return hostname.startswith("dpu-vm-")


def up(lab_dir: Path, bm: int, say: Say = _quiet, dataplane: str = "memory", vm: int = 0) -> LabState:
    """Start a lab of one controller, `bm` bare-metal agents and `vm` VM agents; return its state once every
    node is up.

    ``dataplane`` "memory" (memory drivers, no packets) or "ovn" (see the module's docstring); VM nodes
    need "ovn" (their VMs boot under their host namespace's libvirtd)."""
    if bm < 0 or vm < 0 or bm + vm < 1:
        raise LabError("a lab needs at least one node (--bm 1 or more, or --vm 1 or more)")
    if dataplane not in DATAPLANES:
        raise LabError(f"unknown data plane '{dataplane}': choose one of {', '.join(DATAPLANES)}")
    if vm and dataplane != "ovn":
        raise LabError("VM nodes need --dataplane ovn: their VMs boot under a host namespace's libvirtd")
    if dataplane == "ovn" and bm + vm > MAX_OVN_NODES:
        raise LabError(f"a lab with --dataplane ovn has at most {MAX_OVN_NODES} nodes")
    lab_dir = lab_dir.expanduser().resolve()
    previous = LabState.load(lab_dir)
    if previous is not None:
        if is_running(previous):
            raise LabError(f"a lab is already running in {lab_dir} (controller {previous.controller_url}); "
                           "stop it first with: dpustack lab down")
        say(f"Cleaning up a stale lab in {lab_dir} (some of its processes are gone)")
        _stop_all(previous)
    _cleanup_dataplane(lab_dir)  # daemons and namespaces recorded by a run that died before lab.json knew them
    _remove(lab_dir, (*_DATA, _LOGS))
    lab_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = LabState(dir=str(lab_dir), dataplane=dataplane)
    hostnames = [f"dpu-bm-{index}" for index in range(1, bm + 1)] + [f"dpu-vm-{index}" for index in range(1, vm + 1)]
    try:
        plane = _start_dataplane(state, hostnames, say) if dataplane == "ovn" else None
        storage = plane.storage if plane is not None else _start_storage_node(state, say)
        admin = _start_controller(state, say, storage, ovn_nb=plane.central.nb if plane else None)
        with state.client(admin) as client:
            _start_agents(state, client, hostnames, say, plane)
            say(f"Waiting for {len(hostnames)} node(s) to report up")
            _wait_until(lambda: _nodes_up(client, state.nodes), "every node to report up", state, NODES_TIMEOUT)
        image = lab_dir / IMAGE_FILE
        state.image = str(build_host_image(image).path if plane else write_boot_image(image))
        state.save()
    except BaseException:
        _stop_all(state)
        raise
    return state


def down(lab_dir: Path, say: Say = _quiet) -> LabState:
    """Stop every process of the lab in `lab_dir` and remove its state and data (logs stay)."""
    lab_dir = lab_dir.expanduser().resolve()
    with locked(lab_dir):  # a `lab restart` under way records its new pid first, then down stops it
        state = LabState.load(lab_dir)
        if state is None:
            raise LabError(f"no lab in {lab_dir}")
        for proc in reversed(state.processes):
            say(f"Stopping {proc.name} (pid {proc.pid})")
        _stop_all(state)
        _remove(lab_dir, _DATA)
    return state


def load_lab(lab_dir: Path) -> LabState:
    """The state of a lab in `lab_dir`, or a LabError telling how to start one."""
    lab_dir = lab_dir.expanduser().resolve()
    state = LabState.load(lab_dir)
    if state is None:
        raise LabError(f"no lab in {lab_dir}; start one with: dpustack lab up --bm 2")
    return state


def _start_dataplane(state: LabState, hostnames: list[str], say: Say) -> DataPlane:
    """The OVN central, the underlay, and per node a DPU namespace with its daemons and a host namespace."""
    plane = DataPlane(Path(state.dir) / _DP_DIR, prefix=NETNS_PREFIX, storage=True)
    wanted = [plane.underlay.netns, plane.storage.netns]
    wanted += [ns for h in hostnames for ns in (dpu_netns(h), host_netns(h))]
    busy = [name for name in wanted if netns.exists(name)]
    if busy:
        raise LabError(f"network namespace(s) {', '.join(busy)} already exist: is another lab with "
                       "--dataplane ovn running? Stop it with `dpustack lab down --dir DIR`, or delete them "
                       "with `ip netns delete NAME`")
    say(f"Starting the OVN central (NB {plane.central.nb}), the underlay namespace {plane.underlay.netns} and "
        f"the storage node {plane.storage.netns} (qemu-storage-daemon, NBD on {plane.storage.nbd})")
    try:
        plane.start()
    finally:
        _record_daemons(state, "ovn", plane.central.pids(), plane.central.dir, ["nb", "sb", "northd"],
                        {"nb": plane.central.nb, "sb": plane.central.sb})
        _record_storage_node(state, plane.storage)
    for index, hostname in enumerate(hostnames, start=1):
        names = {"dpu": dpu_netns(hostname), "host": host_netns(hostname)}
        state.namespaces[hostname] = names
        state.save()
        say(f"Starting DPU {hostname} in namespace {names['dpu']} (ovsdb-server, ovs-vswitchd, ovn-controller,"
            f" qemu-storage-daemon) and host namespace {names['host']}")
        try:
            node = plane.add_dpu(hostname, f"192.168.100.{index}", serial=bluefield_serial(index),
                                 netns_name=names["dpu"])
        finally:
            record_dpu(state, hostname, plane.dpus[hostname])
        if is_vm_node(hostname):
            _start_hypervisor(state, plane, hostname, names["host"], f"192.168.101.{index}", say)
        else:
            _start_machine(state, plane, hostname, names["host"], say)
    for node in plane.dpus.values():
        node.wait_for_bridge()
    return plane


def record_dpu(state: LabState, hostname: str, node: DpuNode) -> None:
    """Record the running daemons of DPU ``hostname`` (found by their pidfiles) where its earlier records were,
    so `lab down` still stops them after the node's agent."""
    def earlier(proc: LabProcess) -> bool:
        return proc.role == "dpu" and proc.name.startswith(f"{hostname}/")
    at = next((i for i, proc in enumerate(state.processes) if earlier(proc)), len(state.processes))
    kept = [proc for proc in state.processes if not earlier(proc)]
    state.processes = kept
    daemons = node.pids() if node.dir.exists() else {}
    _record_daemons(state, hostname, daemons, node.dir, ["ovsdb-server", "ovs-vswitchd", "ovn-controller", DAEMON],
                    {"ovsdb-server": node.db})
    state.processes = kept[:at] + state.processes[len(kept):] + kept[at:]
    state.save()


def dataplane_dir(state: LabState) -> Path:
    """Where the OVN data plane of the lab keeps its daemons and its record."""
    return Path(state.dir) / _DP_DIR


def _start_libvirtd(state: LabState, plane: DataPlane, hostname: str, namespace: str,
                    management_ip: str = "") -> LibvirtDaemon:
    """The host namespace (on the management network at ``management_ip``, if given) and its libvirtd,
    recorded."""
    try:
        plane.add_host(namespace, netns_name=namespace, machine=True, management_ip=management_ip)
    finally:
        daemon = plane.libvirtds[namespace]
        if daemon.pid is not None:
            state.processes.append(LabProcess(name=f"{hostname}/libvirtd", role="host", pid=daemon.pid,
                                              started=daemon.started, url=daemon.uri, log=str(daemon.log)))
            state.save()
    return daemon


def _start_hypervisor(state: LabState, plane: DataPlane, hostname: str, namespace: str, management_ip: str,
                      say: Say) -> None:
    """A VM node's host: the host namespace on the management network at ``management_ip`` (where VMs
    migrating live here arrive), and the libvirtd its agent runs VMs under."""
    say(f"Starting host namespace {namespace} ({management_ip} on the management network) with the libvirtd "
        "its VMs run under")
    daemon = _start_libvirtd(state, plane, hostname, namespace, management_ip)
    commands = Path(state.dir) / "nodes" / hostname / "cmd"
    state.hypervisors[hostname] = {"uri": daemon.uri, "commands": str(commands)}
    state.save()


def _start_machine(state: LabState, plane: DataPlane, hostname: str, namespace: str, say: Say) -> None:
    """The host namespace, its libvirtd (recorded) and the host machine, defined and off."""
    say(f"Starting host namespace {namespace} with its libvirtd and machine {namespace} (off)")
    daemon = _start_libvirtd(state, plane, hostname, namespace)
    node_dir = Path(state.dir) / "nodes" / hostname
    node_dir.mkdir(parents=True, exist_ok=True)
    console, command = node_dir / "console.log", node_dir / "ttyS1.sock"
    define_host(daemon.uri, namespace, console_log=console, command_socket=command)
    state.machines[hostname] = {"uri": daemon.uri, "domain": namespace, "console": str(console),
                                "command": str(command)}
    state.save()


def _start_storage_node(state: LabState, say: Say) -> StorageNode:
    """The memory lab's storage node: its qemu-storage-daemon beside the controller, NBD on loopback."""
    node = StorageNode(Path(state.dir) / _STORAGE_DIR, None, port=processes.free_port())
    say(f"Starting the storage node's qemu-storage-daemon (NBD on {node.nbd})")
    try:
        node.start()
    finally:
        _record_storage_node(state, node)
    return node


def _record_storage_node(state: LabState, node: StorageNode | None) -> None:
    pid = node.pid() if node is not None else None
    if node is not None and pid is not None:
        _record_daemons(state, "storage", {DAEMON: pid}, node.dir, [DAEMON], {DAEMON: f"nbd://{node.nbd}"})


def _record_daemons(state: LabState, owner: str, pids: dict[str, int], directory: Path, order: list[str],
                    urls: dict[str, str]) -> None:
    """Record detached daemons (found by their pidfiles) in start order, so `down` stops them in reverse."""
    for name in sorted(pids, key=lambda n: order.index(n) if n in order else len(order)):
        pid = pids[name]
        role = owner if owner in ("ovn", "storage") else "dpu"
        state.processes.append(LabProcess(name=f"{owner}/{name}", role=role, pid=pid, started=processes.start_time(pid),
                                          url=urls.get(name, ""), log=str(directory / f"{name}.log")))
    state.save()


def _cleanup_dataplane(lab_dir: Path, namespaces: list[str] = ()) -> None:
    """Kill the data plane daemons recorded in the lab's dataplane.json and delete its namespaces."""
    DataPlane(lab_dir / _DP_DIR, prefix=NETNS_PREFIX).cleanup_leftovers()
    for name in namespaces:
        netns.delete(name)


def _start_bmc(state: LabState, hostname: str, index: int, say: Say) -> bmcs.EmulatedBmc:
    """A Redfish emulator for odd nodes, an IPMI one for even nodes, driving the node's host machine;
    recorded at once."""
    workdir = Path(state.dir) / "nodes" / hostname / "bmc"
    machine = state.machines[hostname]
    if index % 2:
        say(f"Starting a Redfish BMC emulator for {hostname} (sushy-tools on its machine's libvirtd)")
        bmc = bmcs.start_redfish(workdir, libvirt_uri=machine["uri"])
        url = bmc.address
    else:
        say(f"Starting an IPMI BMC emulator for {hostname} (driving machine {machine['domain']})")
        bmc = bmcs.start_ipmi(workdir, serial=f"LABBF2{index:06d}", libvirt_uri=machine["uri"],
                              domain=machine["domain"])
        url = f"ipmi://{bmc.address}:{bmc.port}"
    state.processes.append(LabProcess(name=f"{hostname}/bmc-{bmc.kind}", role="bmc", pid=bmc.pid,
                                      started=bmc.started, url=url, log=bmc.log, argv=bmc.argv, env=bmc.env,
                                      cwd=bmc.cwd))
    state.save()
    return bmc


def _start_controller(state: LabState, say: Say, storage: StorageNode, ovn_nb: str | None = None) -> str:
    """Start the controller over TLS (a certificate from the lab CA), wait for /healthz and its admin token;
    return that token. It keeps volumes as qcow2 chains served by the `storage` node, and with the OVN
    data plane (`ovn_nb`) writes networks into OVN."""
    lab_dir = Path(state.dir)
    port = processes.free_port()
    ca = LabCa(lab_dir / _PKI_DIR)
    state.ca_file = str(ca.ca_file)
    state.controller_url = f"https://127.0.0.1:{port}"
    state.controller_home = str(lab_dir / "controller")
    say(f"Starting the controller on {state.controller_url}")
    cert = ca.issue("controller", dns=("localhost",))
    argv = processes.python_entry_point("dpustack.api.main") + ["--bind", f"127.0.0.1:{port}"]
    env = {"DPUSTACK_HOME": state.controller_home, "DPUSTACK_TLS_CERT": str(cert.cert_file),
           "DPUSTACK_TLS_KEY": str(cert.key_file), "DPUSTACK_AGENT_CA": str(ca.ca_file)}
    env.update({"DPUSTACK_VOLUME_BACKEND": "qcow2", "DPUSTACK_STORAGE_QMP": str(storage.qmp),
                "DPUSTACK_STORAGE_NBD": storage.nbd})
    if ovn_nb:
        env["DPUSTACK_OVN_NB"] = ovn_nb
    _spawn(state, "controller", "controller", argv, state.controller_url, env=env)
    home = Path(state.controller_home)
    _wait_until(lambda: healthy(state, state.controller_url) and (home / "admin-token").exists(),
                "the controller to answer /healthz", state, CONTROLLER_TIMEOUT)
    return state.admin_token()


def _start_agents(state: LabState, client: Client, hostnames: list[str], say: Say,
                  plane: DataPlane | None = None) -> None:
    """Enroll each node (its own report token and controller credential), issue its certificate, start it.
    The n-th node of the list has the lab's n-th DPU serial and PCI tree."""
    ca = LabCa(Path(state.dir) / _PKI_DIR)
    for index, hostname in enumerate(hostnames, start=1):
        vm = is_vm_node(hostname)
        enrolment = client.post("/v1/nodes", {"hostname": hostname, "node_type": "vm" if vm else "bm"})
        spec = AgentSpec(hostname=hostname, port=processes.free_port(), node_dir=Path(state.dir) / "nodes" / hostname,
                         controller_url=state.controller_url, controller_token=enrolment["report_token"],
                         controller_digest=enrolment["controller_credential_sha256"], ca_file=ca.ca_file,
                         cert=ca.issue(hostname), index=index)
        extra: dict = {}
        if plane is not None:
            names = state.namespaces[hostname]
            dpu = plane.dpus[hostname]
            if vm:
                host = state.hypervisors[hostname]
                extra = {"dataplane": NodeDataplane(host_netns=names["host"], dpu_netns=names["dpu"], ovsdb=dpu.db,
                                                    qsd=dpu.qsd, vhost_dir=dpu.vhost_dir),
                         "hypervisor": VmHost(uri=host["uri"], command_dir=Path(host["commands"]))}
            else:
                machine = state.machines[hostname]
                extra = {"dataplane": NodeDataplane(host_netns=names["host"], dpu_netns=names["dpu"], ovsdb=dpu.db,
                                                    qsd=dpu.qsd, vhost_dir=dpu.vhost_dir,
                                                    machine=HostMachineSpec(uri=machine["uri"],
                                                                            domain=machine["domain"],
                                                                            cpu=VCPUS, mem=MEMORY_MIB)),
                         "bmc": _start_bmc(state, hostname, index, say)}
        config = write_config(spec, serial=f"LABBF2{index:06d}", **extra)
        say(f"Starting agent {hostname} on {spec.url}")
        argv = processes.python_entry_point("dpustack.agent.main") + ["--config", str(config)]
        _spawn(state, hostname, "agent", argv, spec.url, config=str(config))
        state.nodes.append(hostname)
        state.save()


def _spawn(state: LabState, name: str, role: str, argv: list[str], url: str, *,
           env: dict[str, str] | None = None, config: str | None = None) -> None:
    """Start one process and record it in the state file at once, so a crash cannot leak it.

    The record keeps argv, `env` and the working directory: `lab restart` starts it again from them alone."""
    log = Path(state.dir) / _LOGS / f"{name}.log"
    proc = LabProcess(name=name, role=role, pid=0, started=None, url=url, log=str(log), config=config,
                      argv=list(argv), env=dict(env or {}), cwd=state.dir)
    launch(proc)
    state.processes.append(proc)
    state.save()


def launch(proc: LabProcess) -> None:
    """Start `proc`'s recorded command (this environment minus DPUSTACK_*, plus its own `env`); set its pid."""
    if not proc.argv:
        raise LabError(f"{proc.name} has no recorded command line to start")
    try:
        pid = processes.spawn(proc.argv, log=Path(proc.log), env={**_clean_environment(), **proc.env},
                              cwd=Path(proc.cwd) if proc.cwd else None)
    except OSError as exc:
        raise LabError(f"cannot start {proc.name} ({proc.argv[0]}): {exc.strerror or exc}") from exc
    proc.pid, proc.started = pid, processes.start_time(pid)


def _clean_environment() -> dict[str, str]:
    """This environment without DPUSTACK_* settings, so a user's own setup cannot leak into the lab."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DPUSTACK_")}


def healthy(state: LabState, url: str) -> bool:
    """Whether the lab process at `url` (the controller or an agent, over TLS from the lab CA) answers /healthz."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0, verify=state.tls()).status_code == 200
    except httpx.HTTPError:
        return False


def _nodes_up(client: Client, hostnames: list[str]) -> bool:
    up = {node["hostname"] for node in client.get("/v1/nodes") if node.get("status") == "up"}
    return set(hostnames) <= up


def _wait_until(ready: Callable[[], bool], what: str, state: LabState, timeout: float) -> None:
    """Poll `ready` until true; fail early, with the log's tail, if a lab process dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in state.processes:
            if not processes.is_alive(proc.pid, proc.started):
                raise LabError(f"{proc.name} exited while waiting for {what}; end of {proc.log}:\n"
                               f"{_tail(Path(proc.log))}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {Path(state.dir) / _LOGS}")
        time.sleep(0.2)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_all(state: LabState) -> None:
    """Stop the lab's processes, agents first, and forget them."""
    for proc in reversed(state.processes):
        processes.stop(proc.pid, proc.started)
    if state.dataplane == "ovn":
        _cleanup_dataplane(Path(state.dir), state.all_namespaces())
    state.path.unlink(missing_ok=True)


def _remove(lab_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        path = lab_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
