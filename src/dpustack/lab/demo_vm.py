"""The VM flows of `dpustack demo --dataplane ovn`, on the lab's VM node beside the bare-metal ones.

v1 is a VM on dpu-vm-1: a domain of the libvirtd in host namespace host-vm-1, its DPU functions standing in
as the lab's hypervisor variant says (a virtio NIC on the net function's tap, a vhost-user-blk disk on the
storage export). In order:

* it boots the same lab host image from its own boot volume, takes its port's address from OVN's DHCP and
  applies its metadata like a bare-metal host, and pings s1, a bare-metal server on dpu-bm-1, across the
  Geneve tunnel between the two DPUs;
* a NIC hot-plugged into the running VM gets its address by DHCP and leaves it when unplugged;
* its boot volume is snapshotted while it runs; a volume made from the snapshot, hot-plugged into it, holds
  what it wrote before the snapshot only;
* resized to a bigger flavor, it boots again with the new memory; the confirm frees the old flavor's claim;
* stopped, its OS shuts down on the power button while its functions stay on the DPU; it boots again on start;
* paused, it answers no ping; unpaused, it answers again without having rebooted;
* a new admin password reaches the running VM through its QEMU guest agent: root logs in with it on the
  serial console, without a reboot;
* migrated cold to dpu-vm-2, it boots there with its hostname, its address and a file written on its boot
  volume before the move; the confirm frees dpu-vm-1's claim;
* migrated live back to dpu-vm-1 while s1 pings it, it runs on without a reboot (its uptime continues, the
  file is there): the pings lost are counted and printed, bounded by the gap its NIC had during the move;
* s2, a bare-metal server, migrates to dpu-vm-2 with a VM flavor, and v1 to s2's former node dpu-bm-2 with a
  bare-metal flavor: each boots there with its hostname, address and file, and its source is left empty;
* deleted, they leave no domain on any host.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import libvirt

from dpustack.drivers.hypervisor.libvirt_lab import command_socket
from dpustack.instance_states import InstanceStatus
from dpustack.lab.demo_ovn import BOOT_TIMEOUT, OvnTour
from dpustack.lab.tour import Flow, FlowFailed, expect
from dpustack.libvirt_host import HostMachine, opened

VM_NODE = "dpu-vm-1"
VM_NODE2 = "dpu-vm-2"
BM_NODE2 = "dpu-bm-2"
VM_FLAVOR = "vm.lab"
VM_BIGGER = "vm.lab2"
BM_FLAVOR = "bm.lab"
MOVED_FILE = "/boot/moved.txt"  # on the boot volume's file system (the host image mounts it read-only)
LIVE_PING_INTERVAL = 0.2  # s between the pings s1 sends v1 while it migrates live
LIVE_PING_SECONDS = 16  # how long s1 pings
LIVE_GAP_SLACK = 6.0  # s of pings lost beyond the NIC gap the operation measured: the guest's DHCP on replug


class VmTour(OvnTour):
    """The OVN tour with a VM on the lab's VM node, its flows before everything is deleted."""

    def flows(self) -> list[Flow]:
        flows = super().flows()
        at = next(index for index, (name, _) in enumerate(flows) if name.startswith("delete everything"))
        return flows[:at] + [
            (f"create v1 (group default), a VM on {VM_NODE}: it boots from its volume, takes its address from "
             "OVN's DHCP and applies its metadata", self.create_vm),
            ("ping v1 (VM) → s1 (bare metal) across Geneve", self.vm_to_bare_metal),
            ("a NIC hot-plugged into running v1 gets its address by DHCP; unplugged, it leaves v1", self.vm_nic),
            ("storage: snapshot of v1's boot volume while it runs, a volume from it hot-plugged into v1",
             lambda: self.snapshot_into("v1", "v1")),
            (f"resize v1 to {VM_BIGGER} (384 MiB): it boots again with the memory, the same NICs and disks; "
             "resize-confirm frees the old flavor's claim", self.resize),
            ("stop v1: its OS shuts down on the power button, its functions stay on the DPU; start: it boots again",
             self.stop_start),
            ("pause v1: PAUSED, no ping answered; unpause: ACTIVE, answering again, not rebooted", self.pause),
            ("new admin password for v1 through its QEMU guest agent: root logs in with it on v1's serial "
             "console, no reboot", self.vm_password),
            (f"cold migration of v1 {VM_NODE} → {VM_NODE2}: it boots there with its hostname, address and a file "
             f"on its boot volume; migrate-confirm frees {VM_NODE}'s claim",
             lambda: self.move("v1", {"node": VM_NODE2}, VM_NODE2)),
            (f"live migration of v1 {VM_NODE2} → {VM_NODE} while s1 pings it: its uptime continues, the file is "
             "there, the pings lost are bounded by its NIC's gap", self.live_move),
            (f"bare metal → VM: s2 migrates from {BM_NODE2} to {VM_NODE2} with flavor {VM_FLAVOR}: its hostname, "
             "address and file survive", lambda: self.move("s2", {"node": VM_NODE2, "flavor": VM_FLAVOR}, VM_NODE2)),
            (f"VM → bare metal: v1 migrates from {VM_NODE} to {BM_NODE2} with flavor {BM_FLAVOR}: its hostname, "
             "address and file survive", lambda: self.move("v1", {"node": BM_NODE2, "flavor": BM_FLAVOR}, BM_NODE2)),
        ] + flows[at:]

    def command_channel(self, server: str) -> str:
        node = self.nodes[server]
        if node in self.lab.hypervisors:
            uuid = self.admin.get(f"/v1/instances/{server}")["id"]
            return str(command_socket(Path(self.lab.hypervisors[node]["commands"]), uuid))
        return super().command_channel(server)

    def setup(self) -> None:
        super().setup()
        self.admin.post("/v1/flavors", {"name": VM_FLAVOR, "vcpus": 1, "ram": 256, "disk": 1, "type": "vm"})
        # one vCPU: until the confirm both flavors are claimed on the lab's host, which has 2 CPUs
        self.admin.post("/v1/flavors", {"name": VM_BIGGER, "vcpus": 1, "ram": 384, "disk": 1, "type": "vm"})

    def create_vm(self) -> None:
        self.create("v1", None, VM_NODE, flavor=VM_FLAVOR)
        server = self.admin.get("/v1/instances/v1")
        expect(self.domain_state(server["id"]) == "running",
               f"v1's domain on {VM_NODE}'s host is {self.domain_state(server['id'])}, expected running")
        step = self.wait_step("v1", lambda s: s["step"] == "ready", "ready step", BOOT_TIMEOUT)
        steps = {s["step"]: s for s in self.steps("v1")}
        lease = steps.get("dhcp", {})
        expect(lease.get("address", "").split("/")[0] == self.ips["v1"],
               f"v1: DHCP gave {lease.get('address')}, its port's address is {self.ips['v1']}")
        expect(steps.get("metadata", {}).get("uuid") == server["id"],
               f"v1: it fetched the metadata of {steps.get('metadata')}, not of {server['id']}")
        _, hostname = self.inside("v1", "hostname")
        expect(hostname.strip() == "v1", f"v1 calls itself {hostname.strip()!r}")
        (disk,) = server["disks"]
        (nic,) = server["nics"]
        self.say(f"v1: a domain on {VM_NODE}'s host, booted from {steps['boot']['disk']} (volume "
                 f"{disk['volume_id']}, storage function at {disk['bdf']}), {lease['nic']} (net function at "
                 f"{nic['bdf']}) got {lease['address']} by DHCP, hostname v1; {step['step']}")

    def vm_to_bare_metal(self) -> None:
        received, output = self.ping("v1", self.ips["s1"])
        expect(received >= 2, f"{received}/3 replies from s1, expected at least 2:\n{output}")

    def vm_nic(self) -> None:
        port, lease = self.hot_add_nic("v1")
        self.run("DELETE", f"/v1/instances/v1/nics/{port['id']}")
        self.wait_step("v1", lambda s: s["step"] == "nic-gone" and s.get("nic") == lease["nic"],
                       f"nic-gone step for {lease['nic']}")
        nics = [nic["port_id"] for nic in self.admin.get("/v1/instances/v1")["nics"]]
        expect(port["id"] not in nics, f"v1 still shows the unplugged port {port['id']}: {nics}")

    def resize(self) -> None:
        before = self.server("v1", InstanceStatus.ACTIVE)
        boots = sum(s["step"] == "ready" for s in self.steps("v1"))
        _, memory = self.inside("v1", "grep MemTotal /proc/meminfo")
        self.run("POST", "/v1/instances/v1/resize", {"flavor": VM_BIGGER})
        resized = self.server("v1", InstanceStatus.VERIFY_RESIZE)
        self.wait_for(lambda: sum(s["step"] == "ready" for s in self.steps("v1")) > boots,
                      "v1 to be ready again after its resize", BOOT_TIMEOUT)
        _, bigger = self.inside("v1", "grep MemTotal /proc/meminfo")
        kib = [int(text.split()[1]) for text in (memory, bigger)]
        expect(kib[1] > kib[0] + 100 * 1024, f"v1's memory went from {kib[0]} KiB to {kib[1]} KiB on its resize")
        expect((resized["nics"], resized["disks"]) == (before["nics"], before["disks"]),
               f"v1's NICs and disks changed on its resize: {before['nics']} {before['disks']} -> "
               f"{resized['nics']} {resized['disks']}")
        claimed = self.admin.get(f"/v1/nodes/{VM_NODE}")["claimed_mem"]
        self.admin.request("POST", "/v1/instances/v1/resize-confirm")
        self.server("v1", InstanceStatus.ACTIVE)
        freed = self.admin.get(f"/v1/nodes/{VM_NODE}")["claimed_mem"]
        expect(freed == claimed - 256, f"{VM_NODE} claims {freed} MiB after the confirm, {claimed} MiB before it")
        self.say(f"v1: {kib[1] // 1024} MiB after its resize (was {kib[0] // 1024} MiB); {VM_NODE} claimed "
                 f"{claimed} MiB until the confirm, {freed} MiB after it")

    def stop_start(self) -> None:
        uuid = self.server("v1", InstanceStatus.ACTIVE)["id"]
        boots = sum(s["step"] == "ready" for s in self.steps("v1"))
        held = set(self.representors()[VM_NODE])
        presses = sum(s["step"] == "poweroff" for s in self.steps("v1"))
        self.run("POST", "/v1/instances/v1/stop")
        self.server("v1", InstanceStatus.SHUTOFF)
        expect(self.domain_state(uuid) == "off", f"v1's domain is {self.domain_state(uuid)} once stopped")
        expect(sum(s["step"] == "poweroff" for s in self.steps("v1")) > presses,
               "v1's console shows no poweroff step: it did not power off through its OS")
        expect(set(self.representors()[VM_NODE]) == held,
               f"v1's representors on {VM_NODE} changed while it is off: {held} -> {self.representors()[VM_NODE]}")
        boot = self.boot_volume("v1")
        expect(boot["status"] == "in-use" and boot["attachments"][0]["node"] == VM_NODE,
               f"v1's boot volume is {boot['status']} while v1 is off, expected in-use on {VM_NODE}")
        self.run("POST", "/v1/instances/v1/start")
        self.server("v1", InstanceStatus.ACTIVE)
        self.wait_for(lambda: sum(s["step"] == "ready" for s in self.steps("v1")) > boots,
                      "v1 to be ready again after its start", BOOT_TIMEOUT)
        received, output = self.ping("v1", self.ips["s1"])
        expect(received >= 2, f"{received}/3 replies from s1 after v1's start:\n{output}")

    def pause(self) -> None:
        boots = sum(s["step"] == "ready" for s in self.steps("v1"))
        uuid = self.server("v1", InstanceStatus.ACTIVE)["id"]
        self.run("POST", "/v1/instances/v1/pause")
        self.server("v1", InstanceStatus.PAUSED)
        expect(self.domain_state(uuid) == "paused", f"v1's domain is {self.domain_state(uuid)}, expected paused")
        received, output = self.ping("s1", self.ips["v1"])
        expect(received == 0, f"paused v1 answered {received}/3 pings from s1:\n{output}")
        self.run("POST", "/v1/instances/v1/unpause")
        self.server("v1", InstanceStatus.ACTIVE)
        received, output = self.ping("s1", self.ips["v1"])
        expect(received >= 2, f"{received}/3 replies from v1 once unpaused, expected at least 2:\n{output}")
        expect(sum(s["step"] == "ready" for s in self.steps("v1")) == boots, "v1 rebooted across its pause")

    def vm_password(self) -> None:
        password = secrets.token_urlsafe(12)
        boots = sum(s["step"] == "ready" for s in self.steps("v1"))
        self.run("POST", "/v1/instances/v1/admin-password", {"new_password": password})
        transcript = self.console_login("v1", password)
        expect(sum(s["step"] == "ready" for s in self.steps("v1")) == boots, "v1 rebooted to take its password")
        self.say(f"v1: root logged in on the serial console with the password its guest agent set ({transcript!r})")

    def move(self, server: str, body: dict[str, Any], target: str) -> None:
        """Cold-migrate ``server`` (``body``: the migrate request) to ``target``, where it boots from the same
        volume; its hostname, ports, address and a file written on its boot volume before survive; its source
        is left empty and freed by the confirm."""
        token = self.write_file(server)
        before = self.server(server, InstanceStatus.ACTIVE)
        source, flavor = before["node"], self.admin.get(f"/v1/flavors/{before['flavor_id']}")
        claimed = self.admin.get(f"/v1/nodes/{source}")["claimed_mem"]
        began = time.monotonic()
        op = self.run("POST", f"/v1/instances/{server}/migrate", body)
        moved = self.server(server, InstanceStatus.VERIFY_MIGRATE)
        expect(moved["node"] == target, f"{server} moved to {moved['node']}, not {target}")
        self.nodes[server] = target
        self.wait_for(lambda: self.uptime(server) is not None and self.uptime(server) < time.monotonic() - began,
                      f"{server} to boot on {target}", BOOT_TIMEOUT)
        self.survived(server, before, token)
        self.left_empty(source, before["id"])
        self.admin.request("POST", f"/v1/instances/{server}/migrate-confirm")
        self.server(server, InstanceStatus.ACTIVE)
        freed = self.admin.get(f"/v1/nodes/{source}")["claimed_mem"]
        expect(freed == claimed - flavor["ram"],
               f"{source} claims {freed} MiB after the confirm, {claimed} MiB before the move")
        detail = next(s for s in op["steps"] if s["name"] == "finish_migrate").get("detail") or {}
        self.say(f"{server}: {source} → {target} in {detail.get('duration_ms')} ms (off for "
                 f"{detail.get('downtime_ms')} ms), booted there as {server} with {self.ips[server]} and "
                 f"{MOVED_FILE}; {source} freed {claimed - freed} MiB on the confirm")

    def live_move(self) -> None:
        before = self.server("v1", InstanceStatus.ACTIVE)
        token = self.write_file("v1")
        boots = sum(s["step"] == "ready" for s in self.steps("v1"))
        up_before, began = self.uptime("v1"), time.monotonic()
        pinged: dict[str, str] = {}

        def ping() -> None:
            try:
                pinged["output"] = self.inside("s1", f"ping -i {LIVE_PING_INTERVAL} -w {LIVE_PING_SECONDS} -W 1 "
                                                     f"{self.ips['v1']}", timeout=LIVE_PING_SECONDS + 15)[1]
            except Exception as exc:  # reported by the flow below
                pinged["error"] = f"{type(exc).__name__}: {exc}"

        pinger = threading.Thread(target=ping, name="live-ping", daemon=True)
        pinger.start()
        time.sleep(2.0)  # pings answered before the move
        op = self.run("POST", "/v1/instances/v1/migrate", {"live": True, "node": VM_NODE})
        pinger.join(LIVE_PING_SECONDS + 20)
        moved = self.server("v1", InstanceStatus.ACTIVE)
        expect(moved["node"] == VM_NODE, f"v1 migrated live to {moved['node']}, not {VM_NODE}")
        self.nodes["v1"] = VM_NODE
        up_after = self.uptime("v1")
        expect(up_before is not None and up_after is not None and up_after >= up_before + time.monotonic() - began - 2,
               f"v1's uptime went from {up_before} s to {up_after} s across its live migration: it restarted")
        expect(sum(s["step"] == "ready" for s in self.steps("v1")) <= boots, "v1 rebooted across its live migration")
        self.survived("v1", before, token)
        self.left_empty(VM_NODE2, before["id"])
        expect("output" in pinged, f"s1's ping of v1 did not finish: {pinged.get('error', 'no answer')}")
        sent, received, last = _ping_counts(pinged["output"])
        detail = next(s for s in op["steps"] if s["name"] == "finish_migrate").get("detail") or {}
        gap_s = (detail.get("nic_gap_ms") or 0) / 1000
        lost_s = (sent - received) * LIVE_PING_INTERVAL
        expect(received > 0 and last >= sent - 1 / LIVE_PING_INTERVAL,
               f"v1 stopped answering s1 after its live migration ({received}/{sent}, last reply {last}):\n"
               f"{pinged['output']}")
        expect(lost_s <= gap_s + LIVE_GAP_SLACK,
               f"{sent - received} of {sent} pings lost ({lost_s:.1f} s), the NIC gap was {gap_s:.1f} s")
        self.say(f"v1: {VM_NODE2} → {VM_NODE} live in {detail.get('migration_ms')} ms (paused "
                 f"{detail.get('downtime_ms')} ms), uptime {up_before:.0f} s → {up_after:.0f} s; s1 lost "
                 f"{sent - received} of {sent} pings ({lost_s:.1f} s; NIC gap {gap_s * 1000:.0f} ms)")

    def write_file(self, server: str) -> str:
        """Write a new token to `server`'s boot volume's file system (synced); return it."""
        token = secrets.token_hex(8)
        status, output = self.inside(server, f"mount -o remount,rw /boot && echo {token} > {MOVED_FILE} && sync "
                                             "&& mount -o remount,ro /boot")
        expect(status == 0, f"{server} could not write {MOVED_FILE}: {output.strip()}")
        return token

    def uptime(self, server: str) -> float | None:
        """Seconds since `server`'s OS booted, once it is ready; None while its command channel does not answer."""
        try:
            status, output = self.inside(server, "test -e /run/dpustack/ready && cut -d' ' -f1 /proc/uptime",
                                         timeout=10)
        except (OSError, TimeoutError, FlowFailed):
            return None
        return float(output) if status == 0 and output.strip() else None

    def survived(self, server: str, before: dict[str, Any], token: str) -> None:
        """`server` calls itself by its name, has its port's address and the file; its ports are the same."""
        _, hostname = self.inside(server, "hostname")
        expect(hostname.strip() == server, f"{server} calls itself {hostname.strip()!r} after its move")
        _, addresses = self.inside(server, "ip -4 -o addr show")
        expect(f" {self.ips[server]}/" in addresses, f"{server} lacks {self.ips[server]} after its move:\n{addresses}")
        _, found = self.inside(server, f"cat {MOVED_FILE}")
        expect(found.strip() == token, f"{MOVED_FILE} holds {found.strip()!r} after the move, {token!r} before")
        after = self.admin.get(f"/v1/instances/{server}")
        ports = [(n["port_id"], n["mac_address"], n["ip_address"]) for n in after["nics"]]
        expect(ports == [(n["port_id"], n["mac_address"], n["ip_address"]) for n in before["nics"]],
               f"{server}'s ports changed in its move: {before['nics']} -> {after['nics']}")

    def left_empty(self, node: str, uuid: str) -> None:
        """Nothing of instance ``uuid`` on ``node``: no domain on a VM node's host, the machine off and
        without devices on a bare-metal one."""
        if node in self.lab.hypervisors:
            state = self.domain_state(uuid, node)
            expect(state == "missing", f"the domain of the moved server is still on {node}'s host ({state})")
        else:
            machine = HostMachine(self.lab.machines[node]["uri"], self.lab.machines[node]["domain"])
            expect(machine.state() == "off" and not machine.devices(),
                   f"{node}'s machine is {machine.state()} with {machine.devices()} after the move")

    def delete_all(self) -> None:
        uuid = self.admin.get("/v1/instances/v1")["id"]
        self.run("DELETE", "/v1/instances/v1")
        super().delete_all()
        for node in self.lab.hypervisors:
            with opened(self.lab.hypervisors[node]["uri"], f"{node}'s libvirtd") as connection:
                left = [d.name() for d in connection.listAllDomains()]
            expect(not left, f"domains left on {node}'s host: {left} (v1 was {uuid})")

    def domain_state(self, uuid: str, node: str = VM_NODE) -> str:
        """"running", "paused", "off" or "missing": domain ``uuid`` on VM node ``node``'s host libvirtd."""
        with opened(self.lab.hypervisors[node]["uri"], f"{node}'s libvirtd") as connection:
            found = [d for d in connection.listAllDomains() if d.UUIDString() == uuid]
            if not found:
                return "missing"
            state, _ = found[0].state()
            return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "off")


def _ping_counts(output: str) -> tuple[int, int, int]:
    """Pings sent and answered, and the highest sequence number answered (-1: none), from ping's output."""
    found = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    if found is None:
        raise FlowFailed(f"no ping statistics in: {output.strip()}")
    seqs = [int(n) for n in re.findall(r"seq=(\d+)", output)]
    return int(found.group(1)), int(found.group(2)), max(seqs, default=-1)
