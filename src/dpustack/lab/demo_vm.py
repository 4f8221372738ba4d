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
* deleted, it leaves no domain on its host.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import libvirt

from dpustack.drivers.hypervisor.libvirt_lab import command_socket
from dpustack.instance_states import InstanceStatus
from dpustack.lab.demo_ovn import BOOT_TIMEOUT, OvnTour
from dpustack.lab.tour import Flow, expect
from dpustack.libvirt_host import opened

VM_NODE = "dpu-vm-1"
VM_FLAVOR = "vm.lab"
VM_BIGGER = "vm.lab2"


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

    def delete_all(self) -> None:
        uuid = self.admin.get("/v1/instances/v1")["id"]
        self.run("DELETE", "/v1/instances/v1")
        expect(self.domain_state(uuid) == "missing", f"v1's domain is still on its host ({self.domain_state(uuid)})")
        super().delete_all()

    def domain_state(self, uuid: str) -> str:
        """"running", "paused", "off" or "missing": domain ``uuid`` on the VM node's host libvirtd."""
        with opened(self.lab.hypervisors[VM_NODE]["uri"], "the VM node's libvirtd") as connection:
            found = [d for d in connection.listAllDomains() if d.UUIDString() == uuid]
            if not found:
                return "missing"
            state, _ = found[0].state()
            return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "off")
