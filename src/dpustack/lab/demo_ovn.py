"""`dpustack demo --dataplane ovn`: an OVN lab whose servers really boot, one verdict per flow.

s1 (security group `default`) runs on dpu-bm-1 and s2 (group `web`, made with no ingress rule) on
dpu-bm-2. Each server's host is a machine (a QEMU guest) its BMC powers on; it boots the lab host image
from its boot volume through its storage function, takes its port's address from OVN's DHCP, and applies
its own metadata from 169.254.169.254 (hostname, key, user-data script): the flows read that from each
host's own console and check it inside the host over its command channel. Pings from s1 to s2 are
dropped until `web` gets an ingress ICMP rule, and then cross the Geneve tunnel between the two DPUs;
pings from s2 to s1 stay dropped on that working path (`default` admits its own members only). A
bit-rate limit, then a packet-rate limit, on s1's port caps what s1 sends (measured with ping floods from
s1). Boot volumes are qcow2 overlays on the image, kept by the storage node and served to each DPU over
NBD: s1 writes to its own boot volume, which is snapshotted while in use; a volume made from the snapshot,
hot-plugged into s2, appears there as a disk holding what s1 wrote before the snapshot and nothing
after. A NIC hot-added to s2 gets its address by DHCP; removed, it goes silent. The last flow stops the
lab and checks that no namespace, no machine, no storage export and no process of it is left.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.exceptions import ConnectionClosed

from dpustack.client import Client
from dpustack.instance_states import InstanceStatus
from dpustack.lab import guest_agent, lifecycle, processes
from dpustack.lab.dataplane import metadata_prefix
from dpustack.lab.host_init import step_lines
from dpustack.lab.state import LabState
from dpustack.lab.storage_node import NBD_PORT, STORAGE_IP
from dpustack.lab.tour import OPERATION_TIMEOUT, Flow, FlowFailed, Tour, expect
from dpustack.libvirt_host import HostMachine
from dpustack.linux import netns

SUBNET = "10.80.0.0/24"
KEY_NAME = "demo-key"
QOS_BPS = 1_000_000
QOS_PPS = 100
QOS_SECONDS = 3
QOS_ATTEMPTS = 3
FLOOD_INTERVAL = "0.001"  # seconds between the pings of a flood: as fast as the host sends
PING = "ping -c 3 -W 2 -i 0.5"
ALLOW_ATTEMPTS = 4  # an allowed ping may need the new ACL and the tunnel's neighbour entry first
BOOT_TIMEOUT = 120.0  # power-on to the host's "ready" (emulated machines: about 10 s each)
STEP_TIMEOUT = 30.0
CONSOLE_LOG_LIMIT = 1024 * 1024
BEFORE, AFTER = 0xA1, 0xB2  # what s1 writes to its boot volume before and after its snapshot
PATTERN_BLOCK = 65536
PATTERN_SEEK = 8192  # blocks: 512 MiB into the volume, past the image's 64 MiB file system
PATTERN_AT = f"{PATTERN_SEEK * PATTERN_BLOCK} {PATTERN_BLOCK}"  # qemu-io's offset and length


class OvnTour(Tour):
    """Flows on a running `--dataplane ovn` lab, then its teardown as the last flow."""

    def __init__(self, admin: Client, lab: LabState, say: lifecycle.Say):
        super().__init__(admin, lab)
        self.say = say
        self.ips: dict[str, str] = {}
        self.nodes: dict[str, str] = {}
        self.nic2: dict[str, Any] = {}  # the port of the NIC hot-added to s2, and its name in s2's host
        self.nic2_name = ""
        self.recorded = [(p.pid, p.started) for p in lab.processes]
        self.namespaces = lab.all_namespaces() + [f"{lifecycle.NETNS_PREFIX}-ul", f"{lifecycle.NETNS_PREFIX}-st"]

    def flows(self) -> list[Flow]:
        return [
            ("setup: flavor, image, network, group web", self.setup),
            ("create s1 (group default) on dpu-bm-1", lambda: self.create("s1", None, self.lab.nodes[0])),
            ("create s2 (group web) on dpu-bm-2", lambda: self.create("s2", "web", self.lab.nodes[1])),
            ("each host boots from its volume and takes its address from OVN's DHCP", self.booted),
            ("metadata applied in each host: hostname, key, user-data script", self.metadata),
            ("storage: snapshot of s1's boot volume while in use, a volume from it hot-plugged into s2",
             self.snapshot),
            ("ping s1 → s2 blocked: web has no ingress rule", lambda: self.blocked("s1", "s2")),
            ("ICMP rule on web: ping s1 → s2 across Geneve", self.allow_icmp),
            ("ping s2 → s1 blocked: default admits its members only", lambda: self.blocked("s2", "s1")),
            (f"QoS: s1's port capped at {QOS_BPS / 1_000_000:g} Mbit/s, then {QOS_PPS} pkt/s, measured", self.qos),
            ("a NIC hot-added to s2 gets its address by DHCP", self.add_nic),
            ("NIC removal goes silent", self.remove_nic),
            ("new admin password for s1: after a reboot, root logs in with it on s1's serial console",
             self.new_password),
            ("delete everything: nothing left on br-int or in the machines, no metadata namespace, "
             "no storage export", self.delete_all),
            ("lab down: no namespace, no process left", self.teardown),
        ]

    # -- helpers ---------------------------------------------------------
    def machine(self, server: str) -> dict[str, str]:
        return self.lab.machines[self.nodes[server]]

    def command_channel(self, server: str) -> str:
        """The socket of the command channel into `server`'s booted host."""
        return self.machine(server)["command"]

    def inside(self, server: str, command: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run a shell command inside `server`'s booted host (its command channel); exit status, output."""
        status, output = guest_agent.run(self.command_channel(server), command, timeout=timeout)
        return status, output.decode(errors="replace")

    def steps(self, server: str) -> list[dict]:
        """The step lines `server`'s host printed on its serial console so far, from the console log its
        node's agent keeps (`dpustack server console-log`)."""
        return step_lines(self.admin.console_log(server, CONSOLE_LOG_LIMIT).decode(errors="replace"))

    def wait_step(self, server: str, found: Callable[[dict], bool], what: str,
                  timeout: float = STEP_TIMEOUT) -> dict:
        """The first console step of `server` that ``found`` accepts, waiting for it up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            failed = [s for s in self.steps(server) if s["step"] == "failed"]
            expect(not failed, f"{server}'s host reports a failed step: {failed}")
            step = next((s for s in self.steps(server) if found(s)), None)
            if step is not None:
                return step
            expect(time.monotonic() < deadline, f"{server}'s console shows no {what} within {timeout:g} s")
            time.sleep(0.2)

    def ping(self, source: str, target_ip: str) -> tuple[int, str]:
        """Replies to a bounded ping from inside `source`'s host to `target_ip`."""
        _, output = self.inside(source, f"{PING} {target_ip}")
        found = re.search(r"(\d+) packets received", output)
        return (int(found.group(1)) if found else 0), output.strip()

    def flood(self, source: str, target_ip: str, size: int) -> float:
        """Packets per second of a `QOS_SECONDS` ping flood from `source` that reach `target_ip` and come back."""
        _, output = self.inside(source, f"ping -q -i {FLOOD_INTERVAL} -s {size} -w {QOS_SECONDS} {target_ip}",
                                timeout=QOS_SECONDS + 10)
        found = re.search(r"(\d+) packets received", output)
        expect(found is not None, f"no ping statistics from {source}: {output.strip()}")
        return int(found.group(1)) / QOS_SECONDS

    def representors(self) -> dict[str, list[str]]:
        """Ports on each DPU's br-int other than OVN's own Geneve tunnel ports (ovn-<chassis>-N)."""
        found = {}
        for hostname, names in self.lab.namespaces.items():
            db = f"unix:{Path(self.lab.dir) / 'dp' / hostname / 'db.sock'}"
            ports = netns.run(names["dpu"], ["ovs-vsctl", f"--db={db}", "list-ports", "br-int"]).stdout.split()
            found[hostname] = [p for p in ports if not p.startswith("ovn-")]
        return found

    # -- flows -----------------------------------------------------------
    def setup(self) -> None:
        # fits the lab's host machines (1 vCPU, 256 MiB)
        self.admin.post("/v1/flavors", {"name": "bm.lab", "vcpus": 1, "ram": 256, "disk": 1, "type": "bm"})
        image = self.admin.post("/v1/images", {"name": "img"})
        image = self.admin.upload_image(image["id"], Path(self.lab.image))
        expect(image["status"] == "active", f"image is {image['status']} after upload")
        network = self.admin.post("/v1/networks", {"name": "net1", "subnet": SUBNET})
        expect(bool(network["subnets"]), "network net1 has no subnet")
        self.public_key = _public_key()
        self.admin.post("/v1/keypairs", {"name": KEY_NAME, "public_key": self.public_key})
        web = self.admin.post("/v1/security-groups", {"name": "web", "description": "no ingress until a rule"})
        ingress = [r for r in web["rules"] if r["direction"] == "ingress"]
        expect(not ingress, f"group web starts with ingress rules: {ingress}")

    def create(self, name: str, group: str | None, node: str, flavor: str = "bm.lab") -> None:
        nic: dict[str, Any] = {"network": "net1"}
        if group:
            nic["security_groups"] = [group]
        self.run("POST", "/v1/instances", {"name": name, "flavor": flavor, "image": "img", "networks": [nic],
                                           "node": node, "key_name": KEY_NAME, "user_data": user_data(name)})
        server = self.admin.get(f"/v1/instances/{name}")
        expect(server["status"] == InstanceStatus.ACTIVE and server["node"] == node,
               f"{name} is {server['status']} on {server['node']}, expected {InstanceStatus.ACTIVE} on {node}")
        ports = self.admin.get("/v1/ports", instance=name)
        expect(len(ports) == 1 and bool(ports[0]["fixed_ips"]), f"{name} should have one addressed port: {ports}")
        wanted = self.admin.get(f"/v1/security-groups/{group or 'default'}")["id"]
        expect(ports[0]["security_groups"] == [wanted], f"{name}'s port is in {ports[0]['security_groups']}, "
                                                         f"expected [{wanted}] ({group or 'default'})")
        self.nodes[name] = node
        self.ips[name] = ports[0]["fixed_ips"][0]["ip_address"]

    def booted(self) -> None:
        for name in ("s1", "s2"):
            boot = self.boot_volume(name)
            step = self.wait_step(name, lambda s: s["step"] == "ready", "ready step", BOOT_TIMEOUT)
            steps = {s["step"]: s for s in self.steps(name)}
            disk = steps.get("boot", {})
            expect(disk.get("bdf") == boot["attachments"][0]["bdf"],
                   f"{name} booted from {disk.get('disk')} at {disk.get('bdf')}, not from its boot volume's storage "
                   f"function at {boot['attachments'][0]['bdf']}")
            lease = steps.get("dhcp", {})
            expect(lease.get("address", "").split("/")[0] == self.ips[name],
                   f"{name}: DHCP gave {lease.get('address')}, its port's address is {self.ips[name]}")
            self.say(f"{name}: booted from {disk['disk']} at {disk['bdf']} (volume {boot['id']}), "
                     f"{lease['nic']} got {lease['address']} by DHCP; {step['step']}")

    def metadata(self) -> None:
        for name in ("s1", "s2"):
            server = self.admin.get(f"/v1/instances/{name}")
            steps = {s["step"]: s for s in self.steps(name)}
            expect(steps.get("metadata", {}).get("uuid") == server["id"],
                   f"{name}: its host fetched the metadata of {steps.get('metadata')}, not of {server['id']}")
            expect(steps.get("user-data", {}).get("status") == 0,
                   f"{name}: its user-data script ended {steps.get('user-data')}")
            _, hostname = self.inside(name, "hostname")
            expect(hostname.strip() == name, f"{name}: the host calls itself {hostname.strip()!r}")
            _, keys = self.inside(name, "cat /root/.ssh/authorized_keys")
            expect(self.public_key in keys, f"{name}: key {KEY_NAME} is not in root's authorized_keys: {keys!r}")
            _, hello = self.inside(name, "cat /root/hello")
            expect(hello.strip() == f"hello from {name}", f"{name}: the user-data script left {hello!r}")
            self.say(f"{name}: hostname {hostname.strip()}, key {KEY_NAME} installed, user data said "
                     f"{hello.strip()!r}")

    def blocked(self, source: str, target: str) -> None:
        received, output = self.ping(source, self.ips[target])
        expect(received == 0, f"{received}/3 replies from {target}, expected none:\n{output}")

    def allow_icmp(self) -> None:
        self.admin.post("/v1/security-groups/web/rules", {"direction": "ingress", "protocol": "icmp",
                                                          "remote_ip_prefix": "0.0.0.0/0"})
        received, output = 0, ""
        for _ in range(ALLOW_ATTEMPTS):  # the rule reaches OVN, then the DPUs' flows, within moments
            received, output = self.ping("s1", self.ips["s2"])
            if received >= 2:
                return
        raise FlowFailed(f"{received}/3 replies from s2 after the ICMP rule, expected at least 2:\n{output}")

    def qos(self) -> None:
        (port,) = self.admin.get("/v1/ports", instance="s1")
        big, small = 1000, 16  # ICMP payloads: a frame of 1042 bytes (8336 bits), one of 58
        limit = QOS_BPS / (8 * (big + 42))  # frames per second at the bit-rate limit
        free = self.flood_until("unlimited", big, lambda pps: pps > 2.5 * limit)
        self.run("PUT", f"/v1/ports/{port['id']}/qos", {"bps": QOS_BPS})
        capped = self.flood_until("capped", big, lambda pps: 0.5 * limit <= pps <= 1.5 * limit)  # + the burst
        self.run("DELETE", f"/v1/ports/{port['id']}/qos")
        lifted = self.flood_until("lifted", big, lambda pps: pps > 2.5 * limit)
        self.say(f"s1 → s2 pings of {big} bytes: {free * 8 * (big + 42) / 1e6:.2f} Mbit/s free, "
                 f"{capped * 8 * (big + 42) / 1e6:.2f} Mbit/s with bps={QOS_BPS}, "
                 f"{lifted * 8 * (big + 42) / 1e6:.2f} Mbit/s once lifted")
        free = self.flood_until("unlimited", small, lambda pps: pps > 2.5 * QOS_PPS)
        self.run("PUT", f"/v1/ports/{port['id']}/qos", {"pps": QOS_PPS})
        capped = self.flood_until("capped", small, lambda pps: 0.5 * QOS_PPS <= pps <= 1.5 * QOS_PPS)
        self.run("DELETE", f"/v1/ports/{port['id']}/qos")
        self.say(f"s1 → s2 pings of {small} bytes: {free:.0f} pkt/s free, {capped:.0f} pkt/s with pps={QOS_PPS}")

    def flood_until(self, what: str, size: int, good: Callable[[float], bool]) -> float:
        """Flood s1 → s2 until ``good`` (a limit reaches the DPU's flows within moments)."""
        rate = 0.0
        for _ in range(QOS_ATTEMPTS):
            rate = self.flood("s1", self.ips["s2"], size)
            if good(rate):
                return rate
        raise FlowFailed(f"s1 → s2 {what}: {rate:.0f} pings of {size} bytes per second came back")

    def snapshot(self) -> None:
        self.snapshot_into("s1", "s2")

    def snapshot_into(self, source: str, target: str) -> None:
        """Write through `source`'s boot volume's export, snapshot it live, write again; a volume from the
        snapshot, attached to `target`, holds the first write only, `source`'s volume the second."""
        boot = self.boot_volume(source)
        self.write(source, BEFORE)
        snap = self.admin.post(f"/v1/volumes/{boot['id']}/snapshots", {"name": f"{source}-boot-snap"})
        self.wait(snap["operation_id"])
        snap = self.admin.get(f"/v1/snapshots/{snap['id']}")
        expect(snap["status"] == "available", f"snapshot {source}-boot-snap is {snap['status']}")
        self.write(source, AFTER)
        restored = self.admin.post("/v1/volumes", {"name": f"{source}-restored", "snapshot": snap["id"]})
        self.wait(restored["operation_id"])
        disks = self.disks(target)
        self.run("POST", f"/v1/instances/{target}/volumes", {"volume": restored["id"]})
        restored = self.admin.get(f"/v1/volumes/{restored['id']}")
        expect(restored["status"] == "in-use",
               f"volume {restored['name']} is {restored['status']} after attaching it to {target}")
        added = self.wait_for(lambda: self.disks(target) - disks,
                              f"the restored volume to appear as a disk in {target}")
        (disk,) = added
        expect(self.holds_inside(target, disk, BEFORE), f"{disk} in {target} (the volume made from the snapshot) "
                                                        f"does not hold what {source} wrote before the snapshot")
        expect(self.holds(boot, AFTER), f"{source}'s boot volume does not hold what {source} wrote after the "
                                        "snapshot")
        self.say(f"{source}'s boot volume served to {boot['attachments'][0]['node']} as function "
                 f"{boot['attachments'][0]['function_id']} at {boot['attachments'][0]['bdf']}; "
                 f"{restored['name']} to {restored['attachments'][0]['node']} at {restored['attachments'][0]['bdf']}")
        self.run("DELETE", f"/v1/instances/{target}/volumes/{restored['id']}")
        self.wait_for(lambda: disk not in self.disks(target), f"{disk} to leave {target} once detached")
        self.admin.request("DELETE", f"/v1/volumes/{restored['id']}")
        self.wait(self.admin.request("DELETE", f"/v1/snapshots/{snap['id']}")["id"])

    def boot_volume(self, server: str) -> dict[str, Any]:
        instance_id = self.admin.get(f"/v1/instances/{server}")["id"]
        (volume,) = [v for v in self.admin.get("/v1/volumes") if v["bootable"] and v["instance_id"] == instance_id]
        return volume

    def wait(self, operation_id: str) -> None:
        final = self.admin.wait_operation(operation_id, timeout=OPERATION_TIMEOUT)
        expect(final["status"] == "succeeded", f"{final['action']} ended {final['status']}: {final.get('error')}")

    def export_uri(self, volume: dict[str, Any]) -> tuple[str, str]:
        """The DPU namespace attaching ``volume`` and its export on the storage node, reached over the underlay."""
        (attachment,) = volume["attachments"]
        return (self.lab.namespaces[attachment["node"]]["dpu"],
                f"nbd://{STORAGE_IP}:{NBD_PORT}/{attachment['id']}")

    def write(self, server: str, pattern: int) -> None:
        """`server` writes a block of ``pattern`` bytes to its boot disk (synced), past its file system."""
        (disk,) = [s["disk"] for s in self.steps(server) if s["step"] == "boot"]
        status, output = self.inside(server, f"head -c {PATTERN_BLOCK} /dev/zero | tr '\\0' '\\{pattern:03o}' | "
                                             f"dd of={disk} bs={PATTERN_BLOCK} seek={PATTERN_SEEK} conv=fsync")
        expect(status == 0, f"{server} could not write to {disk}: {output.strip()}")

    def disks(self, server: str) -> set[str]:
        """The disks `server`'s host sees (/sys/block)."""
        _, output = self.inside(server, "ls /sys/block")
        return {name for name in output.split() if name.startswith("vd")}

    def holds_inside(self, server: str, disk: str, pattern: int) -> bool:
        """Whether the block past the file system of `server`'s /dev/``disk`` is all ``pattern``."""
        status, output = self.inside(server, f"dd if=/dev/{disk} bs={PATTERN_BLOCK} skip={PATTERN_SEEK} count=1 "
                                             f"2>/dev/null | od -An -v -tx1 | tr -s ' \\n' '\\n' | sort -u")
        return status == 0 and output.split() == [f"{pattern:02x}"]

    def wait_for(self, found: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := found()):
            expect(time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.3)
        return value

    def holds(self, volume: dict[str, Any], pattern: int) -> bool:
        namespace, uri = self.export_uri(volume)
        done = netns.run(namespace, ["qemu-io", "-r", "-f", "raw", "-c", f"read -P {pattern:#x} {PATTERN_AT}", uri],
                         check=False)
        return done.returncode == 0 and "Pattern verification failed" not in done.stdout

    def add_nic(self) -> None:
        self.nic2, lease = self.hot_add_nic("s2")
        self.ips["s2-nic2"], self.nic2_name = self.nic2["fixed_ips"][0]["ip_address"], lease["nic"]

    def hot_add_nic(self, server: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Add a NIC on net1 to running `server`; its port and the DHCP lease its host took on it."""
        before = {p["id"] for p in self.admin.get("/v1/ports", instance=server)}
        self.run("POST", f"/v1/instances/{server}/nics", {"network": "net1"})
        (port,) = [p for p in self.admin.get("/v1/ports", instance=server) if p["id"] not in before]
        address = port["fixed_ips"][0]["ip_address"]
        lease = self.wait_step(server, lambda s: s["step"] == "dhcp" and s.get("mac") == port["mac_address"],
                               f"DHCP lease on the NIC with MAC {port['mac_address']}")
        expect(lease["address"].split("/")[0] == address,
               f"{server}'s new NIC got {lease['address']} by DHCP, its port's address is {address}")
        self.say(f"{server}: hot-added {lease['nic']} ({port['mac_address']}) got {lease['address']} by DHCP")
        return port, lease

    def remove_nic(self) -> None:
        port = self.nic2
        self.run("DELETE", f"/v1/instances/s2/nics/{port['id']}")
        expect(port["id"] not in {p["id"] for p in self.admin.get("/v1/ports", instance="s2")}, "s2 still has the port")
        self.wait_step("s2", lambda s: s["step"] == "nic-gone" and s.get("nic") == self.nic2_name,
                       f"nic-gone step for {self.nic2_name}")
        received, output = self.ping("s1", self.ips["s2-nic2"])
        expect(received == 0, f"{received}/3 replies from s2's removed NIC:\n{output}")

    def new_password(self) -> None:
        password = secrets.token_urlsafe(12)
        self.admin.request("POST", "/v1/instances/s1/admin-password", json={"new_password": password})
        boots = sum(s["step"] == "ready" for s in self.steps("s1"))
        self.run("POST", "/v1/instances/s1/reboot", {"type": "hard"})
        self.wait_for(lambda: sum(s["step"] == "ready" for s in self.steps("s1")) > boots,
                      "s1's host to be ready again after the reboot", BOOT_TIMEOUT)
        passwords = [s for s in self.steps("s1") if s["step"] == "password"]
        expect(passwords[-1].get("set") == 1, f"s1's host did not set root's password at boot: {passwords[-1]}")
        transcript = self.console_login("s1", password)
        self.say(f"s1: root logged in on the serial console with the new password ({transcript!r})")

    def console_login(self, server: str, password: str) -> str:
        """Log in as root on `server`'s serial console (`dpustack server console`: through the controller and
        the node's agent, from the host's BMC) and run one command there; the end of what the console showed."""
        seen = bytearray()
        changed = threading.Condition()

        def received() -> None:
            try:
                for data in console:
                    with changed:
                        seen.extend(data if isinstance(data, bytes) else data.encode())
                        changed.notify_all()
            except ConnectionClosed:
                pass

        def answer(prompt: bytes, reply: bytes, what: str, *, repeat: bool = False) -> None:
            """Type ``reply`` (again every 2 s with ``repeat``) until the console shows ``prompt``."""
            start = len(seen)
            deadline = time.monotonic() + STEP_TIMEOUT
            console.send(reply)
            while True:
                with changed:
                    if changed.wait_for(lambda: prompt in seen[start:], timeout=2.0):
                        return
                expect(time.monotonic() < deadline, f"{server}'s console shows no {what}: "
                                                    f"{bytes(seen[-300:]).decode(errors='replace')!r}")
                if repeat:
                    console.send(reply)

        console = self.admin.open_console(server)
        threading.Thread(target=received, name=f"console-{server}", daemon=True).start()
        try:
            answer(b"login:", b"\r", "login prompt", repeat=True)
            answer(b"Password:", b"root\r", "password prompt")
            answer(b"# ", password.encode() + b"\r", "root shell after the password")
            answer(b"LOGGED-IN-42", b"echo LOGGED-IN-$((6 * 7))\r", "output of a command run in the root shell")
            console.send(b"exit\r")
        finally:
            console.close()
        return bytes(seen[-80:]).decode(errors="replace").strip()

    def delete_all(self) -> None:
        for name in ("s1", "s2"):
            self.run("DELETE", f"/v1/instances/{name}")
        left = [s["name"] for s in self.admin.get("/v1/instances")]
        expect(not left, f"servers left: {left}")
        bound = [p["id"] for p in self.admin.get("/v1/ports") if p.get("instance_id")]
        expect(not bound, f"ports still bound after delete: {bound}")
        representors = {node: ports for node, ports in self.representors().items() if ports}
        expect(not representors, f"representor or metadata ports left on br-int: {representors}")
        prefixes = tuple(metadata_prefix(names["dpu"]) for names in self.lab.namespaces.values())
        served = [name for name in netns.names() if name.startswith(prefixes)]
        expect(not served, f"metadata namespaces left: {served}")
        sockets = [str(p) for p in (Path(self.lab.dir) / "dp").glob("*/vhost/*")]
        expect(not sockets, f"storage function sockets left on the DPUs: {sockets}")
        attached = [v["name"] for v in self.admin.get("/v1/volumes") if v["attachments"]]
        expect(not attached, f"volumes still attached (exported) after delete: {attached}")
        for node, spec in self.lab.machines.items():
            machine = HostMachine(spec["uri"], spec["domain"])
            expect(machine.state() == "off", f"{node}'s host machine is still {machine.state()}")
            expect(not machine.devices(), f"devices left in {node}'s host machine: {machine.devices()}")

    def teardown(self) -> None:
        lab_dir = Path(self.lab.dir)
        self.recorded += [(p.pid, p.started) for p in (LabState.load(lab_dir) or self.lab).processes]
        lifecycle.down(lab_dir)
        alive = [pid for pid, started in self.recorded if processes.is_alive(pid, started)]
        expect(not alive, f"lab processes still alive: {alive}")
        left_ns = [name for name in self.namespaces if netns.exists(name)]
        expect(not left_ns, f"namespaces left: {left_ns}")
        strays = processes_naming(lab_dir)
        expect(not strays, f"processes naming {lab_dir} left: {strays}")


def user_data(server: str) -> str:
    """The user-data script each demo server's host runs at boot."""
    return f"#!/bin/sh\necho hello from {server} > /root/hello\n"


def _public_key() -> str:
    """A fresh Ed25519 public key in OpenSSH form."""
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " demo@dpustack"


def processes_naming(directory: Path) -> list[int]:
    """Pids of processes whose command line names `directory` (daemons the lab might have leaked)."""
    marker = str(directory).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if Path(f"/proc/{pid}").exists()]  # not one that exited meanwhile
