"""kill -9 of the source's agent, of the controller and of the target's agent while a VM migrates live.

The whole OVN lab with two VM nodes (`dpustack lab up --vm 2 --dataplane ovn`) and one VM, v1, booted from
its volume: each test migrates it live to the other node and, while its memory is on the way (libvirt's
job runs on the source; it is slowed down with ``virDomainMigrateSetMaxSpeed`` on the source's libvirtd so
that it lasts), kills one lab process with SIGKILL (`dpustack lab kill NAME --signal KILL`) and starts it
again with its recorded command line (`dpustack lab restart NAME`; the controller's record gets a short
lease first, so the new one resumes the operation of the dead one at once). The migration itself is the
source libvirtd's (peer to peer) and goes on meanwhile. Each time the operation succeeds and the user finds
v1 on exactly one node: ACTIVE there in the API, its domain running on that host's libvirtd and on no
other, its guest not rebooted (its uptime went on), its claims freed on the node it left, whose DPU keeps
no function for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from cli_process import run
from dpustack.client import Client
from dpustack.drivers.hypervisor.libvirt_lab import command_socket
from dpustack.lab import guest_agent
from dpustack.lab.state import LabState, locked
from dpustack.libvirt_host import connect
from dpustack.linux import netns

VM1, VM2 = "dpu-vm-1", "dpu-vm-2"
SLOW_MIB = 1  # MiB/s while the process is killed and restarted
FAST_MIB = 8192
READY_TIMEOUT = 120.0
OPERATION_TIMEOUT = 180.0
_NEEDED = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "qemu-storage-daemon",
           "qemu-system-x86_64", "libvirtd", "syslinux", "mcopy", "mkfs.fat")
pytestmark = [
    pytest.mark.timeout(600),  # the first test also starts the lab and boots v1
    pytest.mark.skipif(os.geteuid() != 0, reason="the OVN lab needs root (namespaces)"),
    pytest.mark.skipif(any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
                           for p in _NEEDED), reason=f"needs {', '.join(_NEEDED)}"),
]


@dataclass
class Lab:
    dir: Path
    state: LabState
    admin: Client

    def node_of(self, server: str = "v1") -> str:
        return self.admin.get(f"/v1/instances/{server}")["node"]

    def domain(self, node: str, uuid: str) -> libvirt.virDomain | None:
        """Domain ``uuid`` on ``node``'s host libvirtd, or None."""
        connection = connect(self.state.hypervisors[node]["uri"])
        try:
            return connection.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return None

    def dpu_functions(self, node: str) -> tuple[list[str], list[str]]:
        """What ``node``'s DPU holds for instances: representors on br-int (not OVN's tunnel ports), and
        storage function sockets."""
        db = f"unix:{self.dir / 'dp' / node / 'db.sock'}"
        ports = netns.run(self.state.namespaces[node]["dpu"], ["ovs-vsctl", f"--db={db}", "list-ports",
                                                                "br-int"]).stdout.split()
        return [p for p in ports if not p.startswith("ovn-")], sorted(p.name for p in (self.dir / "dp" / node /
                                                                                       "vhost").glob("*"))

    def uptime(self, node: str, uuid: str) -> float | None:
        """The guest's uptime (s) over its command channel on ``node``; None while it does not answer."""
        channel = str(command_socket(Path(self.state.hypervisors[node]["commands"]), uuid))
        try:
            status, output = guest_agent.run(channel, "test -e /run/dpustack/ready && cut -d' ' -f1 /proc/uptime",
                                             timeout=10)
        except (OSError, TimeoutError):
            return None
        return float(output) if status == 0 and output.strip() else None


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """The lab, a VM flavor and network, v1 on dpu-vm-1 booted; `lab down` afterwards."""
    lab_dir = Path(tempfile.mkdtemp(prefix="dps-lmk-", dir="/tmp")) / "lab"  # short: OVN's socket paths
    try:
        run("lab", "up", "--vm", "2", "--bm", "0", "--dataplane", "ovn", "--dir", str(lab_dir), timeout=300)
        state = LabState.load(lab_dir)
        assert state is not None
        with state.client() as admin:
            admin.post("/v1/flavors", {"name": "vm.lab", "vcpus": 1, "ram": 256, "disk": 1, "type": "vm"})
            image = admin.post("/v1/images", {"name": "img", "disk_format": "raw"})
            admin.upload_image(image["id"], Path(state.image))
            admin.post("/v1/networks", {"name": "net1", "subnet": "10.81.0.0/24"})
            op = admin.post("/v1/instances", {"name": "v1", "flavor": "vm.lab", "image": "img", "node": VM1,
                                              "networks": [{"network": "net1"}]})
            assert admin.wait_operation(op["id"], timeout=OPERATION_TIMEOUT)["status"] == "succeeded"
            made = Lab(lab_dir, state, admin)
            uuid = admin.get("/v1/instances/v1")["id"]
            _wait(lambda: made.uptime(VM1, uuid) is not None, "v1 to boot", READY_TIMEOUT)
            yield made
    finally:
        run("lab", "down", "--dir", str(lab_dir), ok=False)
        shutil.rmtree(lab_dir.parent, ignore_errors=True)


def _wait(found, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := found()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.2)
    return value


def _migrating(domain: libvirt.virDomain) -> bool:
    stats = domain.jobStats(0)
    return stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) not in (libvirt.VIR_DOMAIN_JOB_NONE,
                                                                   libvirt.VIR_DOMAIN_JOB_COMPLETED)


def _short_lease(lab: Lab) -> None:
    """The controller's recorded environment gets a 2 s lease: restarted, it takes over at once."""
    with locked(lab.dir):
        state = LabState.load(lab.dir)
        assert state is not None
        (controller,) = [p for p in state.processes if p.name == "controller"]
        controller.env["DPUSTACK_LEASE_SECONDS"] = "2"
        state.save()


def _move_killing(lab: Lab, victim: str) -> tuple[str, str]:
    """Migrate v1 live to its other node, kill -9 ``victim`` ("source", "target" or "controller") while the
    memory moves, restart it; return the nodes (source, target) once the operation ended, asserting it
    succeeded."""
    source = lab.node_of()
    target = VM2 if source == VM1 else VM1
    uuid = lab.admin.get("/v1/instances/v1")["id"]
    domain = lab.domain(source, uuid)
    assert domain is not None, f"v1's domain is not on {source}"
    domain.migrateSetMaxSpeed(SLOW_MIB)
    up_before, began = lab.uptime(source, uuid), time.monotonic()
    assert up_before is not None
    op = lab.admin.post("/v1/instances/v1/migrate", {"live": True, "node": target})
    _wait(lambda: _migrating(domain), f"the migration of v1 to start on {source}'s libvirtd", 60)
    name = {"source": source, "target": target, "controller": "controller"}[victim]
    if victim == "controller":
        _short_lease(lab)
    run("lab", "kill", name, "--signal", "KILL", "--dir", str(lab.dir))
    assert _migrating(domain), "the migration ended before the kill: the test slowed it too little"
    run("lab", "restart", name, "--dir", str(lab.dir), timeout=120)
    if _migrating(domain):
        domain.migrateSetMaxSpeed(FAST_MIB)
    admin = LabState.load(lab.dir).client()  # a restarted controller wrote no new token: the same one
    final = admin.wait_operation(op["id"], timeout=OPERATION_TIMEOUT)
    assert final["status"] == "succeeded", (final.get("error"), [(s["name"], s["status"]) for s in final["steps"]])
    server = admin.get("/v1/instances/v1")
    assert (server["status"], server["node"]) == ("ACTIVE", target), server
    moved = lab.domain(target, uuid)
    assert moved is not None and moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert lab.domain(source, uuid) is None, f"v1's domain is still on {source} after its move"
    up_after = _wait(lambda: lab.uptime(target, uuid), f"v1 to answer on {target}", 30)
    assert up_after >= up_before + (time.monotonic() - began) - 5, \
        f"v1's uptime went from {up_before} s to {up_after} s: it rebooted"
    node = admin.get(f"/v1/nodes/{source}")
    assert (node["claimed_cpu"], node["claimed_mem"]) == (0, 0), node
    assert lab.dpu_functions(source) == ([], []), f"{source}'s DPU keeps functions of v1 after its move"
    assert lab.dpu_functions(target) != ([], [])
    return source, target


@pytest.mark.parametrize("victim", ["source", "controller", "target"])
def test_a_process_killed_mid_live_migration_leaves_the_vm_on_exactly_one_node(lab: Lab, victim: str) -> None:
    _move_killing(lab, victim)
