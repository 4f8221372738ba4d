"""`dpustack demo --dataplane ovn`: a 3-node OVN lab, packets between two servers' hosts, one verdict per flow.

s1 (security group `default`) runs on dpu-bm-1 and s2 (group `web`, made with no ingress rule) on
dpu-bm-2. Both hosts take their port's address by DHCP and fetch their own metadata (hostname, key,
user data) from 169.254.169.254; pings from s1 to s2 are dropped until `web`
gets an ingress ICMP rule, and then cross the Geneve tunnel between the two DPUs; pings from s2 to s1
stay dropped on that working path (`default` admits its own members only). A bit-rate limit, then a
packet-rate limit, on s1's port caps what s1 sends (measured with UDP blasts); removing s2's NIC silences it.
Boot volumes are qcow2 overlays on the image, kept by the storage node and served to each DPU over NBD:
s1's is snapshotted while it is written through its export, and a volume made from the snapshot, attached
to s2, holds what was written before the snapshot and nothing after. The last flow stops the lab and
checks that no namespace, no storage export and no process of it is left.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dpustack.client import Client
from dpustack.instance_states import InstanceStatus
from dpustack.lab import lifecycle, processes
from dpustack.lab.dataplane import metadata_prefix
from dpustack.lab.dhcp import dhcp_once
from dpustack.lab.guest import fetch_metadata
from dpustack.lab.state import LabState
from dpustack.lab.storage_node import NBD_PORT, STORAGE_IP
from dpustack.lab.tour import OPERATION_TIMEOUT, Flow, FlowFailed, Tour, expect
from dpustack.lab.traffic import DEFAULT_PORT, Rate, measure_udp
from dpustack.linux import netns

SUBNET = "10.80.0.0/24"
KEY_NAME = "demo-key"
QOS_BPS = 5_000_000
QOS_PPS = 2_000
QOS_SECONDS = 1.5
QOS_ATTEMPTS = 3
PING = ["ping", "-c", "3", "-W", "2", "-i", "0.5"]
ALLOW_ATTEMPTS = 4  # an allowed ping may need the new ACL and the tunnel's neighbour entry first
PING_TIMEOUT = 15.0
BEFORE, AFTER = 0xA1, 0xB2  # what is written to s1's boot volume before and after its snapshot
PATTERN_AT = "4M 64k"  # where (offset, length)


class OvnTour(Tour):
    """Flows on a running `--dataplane ovn` lab, then its teardown as the last flow."""

    def __init__(self, admin: Client, lab: LabState, say: lifecycle.Say):
        super().__init__(admin, lab)
        self.say = say
        self.ips: dict[str, str] = {}
        self.nodes: dict[str, str] = {}
        self.recorded = [(p.pid, p.started) for p in lab.processes]
        self.namespaces = lab.all_namespaces() + [f"{lifecycle.NETNS_PREFIX}-ul", f"{lifecycle.NETNS_PREFIX}-st"]

    def flows(self) -> list[Flow]:
        return [
            ("setup: flavor, image, network, group web", self.setup),
            ("create s1 (group default) on dpu-bm-1", lambda: self.create("s1", None, self.lab.nodes[0])),
            ("create s2 (group web) on dpu-bm-2", lambda: self.create("s2", "web", self.lab.nodes[1])),
            ("DHCP address in each host", self.dhcp),
            ("metadata: each host gets its own hostname, key and user data", self.metadata),
            ("storage: snapshot of s1's live boot volume, a volume from it on s2", self.snapshot),
            ("ping s1 → s2 blocked: web has no ingress rule", lambda: self.blocked("s1", "s2")),
            ("ICMP rule on web: ping s1 → s2 across Geneve", self.allow_icmp),
            ("ping s2 → s1 blocked: default admits its members only", lambda: self.blocked("s2", "s1")),
            (f"QoS: s1's port capped at {QOS_BPS // 1_000_000} Mbit/s, then {QOS_PPS} pkt/s, measured", self.qos),
            ("NIC removal goes silent", self.remove_nic),
            ("delete everything: nothing left on br-int, no metadata namespace, no storage export", self.delete_all),
            ("lab down: no namespace, no process left", self.teardown),
        ]

    # -- helpers ---------------------------------------------------------
    def host(self, server: str) -> str:
        return self.lab.namespaces[self.nodes[server]]["host"]

    def ping(self, source: str, target: str) -> tuple[int, str]:
        """Replies to a bounded ping from `source`'s host to `target`'s fixed IP."""
        done = netns.run(self.host(source), [*PING, self.ips[target]], check=False, timeout=PING_TIMEOUT)
        found = re.search(r"(\d+) received", done.stdout)
        return (int(found.group(1)) if found else 0), (done.stdout + done.stderr).strip()

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
        # fits the Redfish emulator's test domain (2 vCPU, 8 GiB)
        self.admin.post("/v1/flavors", {"name": "bm.lab", "vcpus": 1, "ram": 1024, "disk": 10, "type": "bm"})
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

    def create(self, name: str, group: str | None, node: str) -> None:
        nic: dict[str, Any] = {"network": "net1"}
        if group:
            nic["security_groups"] = [group]
        self.run("POST", "/v1/instances", {"name": name, "flavor": "bm.lab", "image": "img", "networks": [nic],
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

    def dhcp(self) -> None:
        for name in ("s1", "s2"):
            namespace = self.host(name)
            (port,) = self.admin.get("/v1/ports", instance=name)
            ifname = next((link.name for link in netns.links(namespace) if link.mac == port["mac_address"]), None)
            expect(ifname is not None, f"no NIC with MAC {port['mac_address']} in {namespace}")
            result = dhcp_once(namespace, ifname, Path(self.lab.dir) / "dhcp")
            self.say(f"{name}: {ifname} in {namespace} got {', '.join(result.addresses) or 'nothing'} "
                     f"({result.reason or 'no answer'})")
            expect(result.bound and f"{self.ips[name]}/24" in result.addresses,
                   f"{name}: wanted {self.ips[name]}/24 by DHCP, got {result.addresses} ({result.reason or 'no answer'})")

    def metadata(self) -> None:
        for name in ("s1", "s2"):
            server = self.admin.get(f"/v1/instances/{name}")
            meta = fetch_metadata(self.host(name))
            expect(meta.status == 200, f"{name}: meta_data.json answered {meta.status}: {meta.body[:200]!r}")
            document = meta.json()
            expect((document.get("uuid"), document.get("hostname")) == (server["id"], name),
                   f"{name}: got the metadata of {document.get('name')} ({document.get('uuid')})")
            expect(document.get("public_keys") == {KEY_NAME: self.public_key},
                   f"{name}: public_keys {document.get('public_keys')}")
            data = fetch_metadata(self.host(name), "openstack/latest/user_data")
            expect((data.status, data.body.decode(errors="replace")) == (200, user_data(name)),
                   f"{name}: user_data answered {data.status}: {data.body[:200]!r}")
            self.say(f"{name}: 169.254.169.254 says hostname {document['hostname']}, uuid {document['uuid']}, "
                     f"key {KEY_NAME}; user data {data.body.decode().splitlines()[1]!r}")

    def blocked(self, source: str, target: str) -> None:
        received, output = self.ping(source, target)
        expect(received == 0, f"{received}/3 replies from {target}, expected none:\n{output}")

    def allow_icmp(self) -> None:
        self.admin.post("/v1/security-groups/web/rules", {"direction": "ingress", "protocol": "icmp",
                                                          "remote_ip_prefix": "0.0.0.0/0"})
        received, output = 0, ""
        for _ in range(ALLOW_ATTEMPTS):  # the rule reaches OVN, then the DPUs' flows, within moments
            received, output = self.ping("s1", "s2")
            if received >= 2:
                return
        raise FlowFailed(f"{received}/3 replies from s2 after the ICMP rule, expected at least 2:\n{output}")

    def qos(self) -> None:
        self.admin.post("/v1/security-groups/web/rules", {"direction": "ingress", "protocol": "udp",
                                                          "port_range_min": DEFAULT_PORT,
                                                          "port_range_max": DEFAULT_PORT,
                                                          "remote_ip_prefix": "0.0.0.0/0"})
        (port,) = self.admin.get("/v1/ports", instance="s1")
        free = self.blast_until("unlimited", lambda rate: rate.bits_per_second > 4 * QOS_BPS)
        self.run("PUT", f"/v1/ports/{port['id']}/qos", {"bps": QOS_BPS})
        capped = self.blast_until("capped", lambda rate: 0.5 * QOS_BPS <= rate.bits_per_second <= 1.1 * QOS_BPS)
        self.run("DELETE", f"/v1/ports/{port['id']}/qos")
        lifted = self.blast_until("lifted", lambda rate: rate.bits_per_second > 4 * QOS_BPS)
        self.say(f"s1 → s2 UDP: {free.bits_per_second / 1e6:.1f} Mbit/s free, "
                 f"{capped.bits_per_second / 1e6:.2f} Mbit/s with bps={QOS_BPS}, "
                 f"{lifted.bits_per_second / 1e6:.1f} Mbit/s once lifted")
        small = {"payload": 64}
        free = self.blast_until("unlimited", lambda rate: rate.packets_per_second > 4 * QOS_PPS, **small)
        self.run("PUT", f"/v1/ports/{port['id']}/qos", {"pps": QOS_PPS})
        capped = self.blast_until("capped", lambda rate: 0.5 * QOS_PPS <= rate.packets_per_second <= 1.1 * QOS_PPS,
                                  **small)
        self.run("DELETE", f"/v1/ports/{port['id']}/qos")
        self.say(f"s1 → s2 UDP, 64-byte payloads: {free.packets_per_second:.0f} pkt/s free, "
                 f"{capped.packets_per_second:.0f} pkt/s with pps={QOS_PPS}")

    def blast_until(self, what: str, good: Callable[[Rate], bool], payload: int = 1000) -> Rate:
        """Measure s1 → s2 until ``good`` (a limit reaches the DPU's flows within moments)."""
        rate = None
        for _ in range(QOS_ATTEMPTS):
            rate = measure_udp(self.host("s1"), self.host("s2"), self.ips["s2"], seconds=QOS_SECONDS,
                               payload=payload)
            if good(rate):
                return rate
        raise FlowFailed(f"s1 → s2 {what}: measured {rate}")

    def snapshot(self) -> None:
        """Write through s1's boot volume's export, snapshot it live, write again; a volume from the snapshot,
        attached to s2, holds the first write only, s1's volume the second."""
        boot = self.boot_volume("s1")
        self.write(boot, BEFORE)
        snap = self.admin.post(f"/v1/volumes/{boot['id']}/snapshots", {"name": "s1-boot-snap"})
        self.wait(snap["operation_id"])
        snap = self.admin.get(f"/v1/snapshots/{snap['id']}")
        expect(snap["status"] == "available", f"snapshot s1-boot-snap is {snap['status']}")
        self.write(boot, AFTER)
        restored = self.admin.post("/v1/volumes", {"name": "restored", "snapshot": snap["id"]})
        self.wait(restored["operation_id"])
        self.run("POST", "/v1/instances/s2/volumes", {"volume": restored["id"]})
        restored = self.admin.get(f"/v1/volumes/{restored['id']}")
        expect(restored["status"] == "in-use", f"volume restored is {restored['status']} after attaching it to s2")
        expect(self.holds(restored, BEFORE), "the volume made from the snapshot does not hold what was written "
                                             "before the snapshot")
        expect(self.holds(boot, AFTER), "s1's boot volume does not hold what was written after the snapshot")
        self.say(f"s1's boot volume served to {boot['attachments'][0]['node']} as function "
                 f"{boot['attachments'][0]['function_id']} at {boot['attachments'][0]['bdf']}; 'restored' to "
                 f"{restored['attachments'][0]['node']} at {restored['attachments'][0]['bdf']}")
        self.run("DELETE", f"/v1/instances/s2/volumes/{restored['id']}")
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

    def write(self, volume: dict[str, Any], pattern: int) -> None:
        namespace, uri = self.export_uri(volume)
        netns.run(namespace, ["qemu-io", "-f", "raw", "-c", f"write -P {pattern:#x} {PATTERN_AT}", uri])

    def holds(self, volume: dict[str, Any], pattern: int) -> bool:
        namespace, uri = self.export_uri(volume)
        done = netns.run(namespace, ["qemu-io", "-r", "-f", "raw", "-c", f"read -P {pattern:#x} {PATTERN_AT}", uri],
                         check=False)
        return done.returncode == 0 and "Pattern verification failed" not in done.stdout

    def remove_nic(self) -> None:
        (port,) = self.admin.get("/v1/ports", instance="s2")
        self.run("DELETE", f"/v1/instances/s2/nics/{port['id']}")
        expect(not self.admin.get("/v1/ports", instance="s2"), "s2 still has a port")
        received, output = self.ping("s1", "s2")
        expect(received == 0, f"{received}/3 replies from s2 after its NIC was removed:\n{output}")

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
    """The cloud-config each demo server boots with."""
    return f"#cloud-config\nhostname: {server}\nruncmd:\n  - echo hello from {server}\n"


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
