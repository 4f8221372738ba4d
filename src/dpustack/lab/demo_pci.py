"""The PCI tour of `dpustack demo` on the lab's generated device trees: device filters, pools, PCI flavors
and remote-managed ports.

It runs after the bare-metal tour, whose flavor ``bm.small``, image ``centos`` and network ``net1`` it uses.
"""

from __future__ import annotations

from typing import Any

from dpustack.instance_states import InstanceStatus
from dpustack.lab.tour import Flow, Tour, expect


class PciTour(Tour):
    """Devices discovered, a GPU through a PCI flavor, a remote-managed NIC, everything freed again."""

    def flows(self) -> list[Flow]:
        return [("PCI devices and pools of every node", self.inventory),
                ("GPU server through a PCI flavor", self.gpu_server),
                ("remote-managed NIC bound to its DPU", self.remote_managed_server),
                ("PCI devices freed on delete", self.free_all)]

    def inventory(self) -> None:
        devices = self.admin.get("/v1/pci/devices")
        nodes = {d["node"] for d in devices}
        expect(nodes == set(self.lab.nodes), f"PCI devices reported by {sorted(nodes)} only")
        expect(any(d["extra_info"].get("e.group") == "gpu" for d in devices), "no GPU offered")
        pools = self.admin.get("/v1/pci/pools")
        expect(all(p["free"] == p["count"] for p in pools), "devices are in use before any server")

    def gpu_server(self) -> None:
        self.admin.post("/v1/pci-flavors", {"name": "bigGPU", "description": "any lab GPU"})
        self.admin.request("PUT", "/v1/pci-flavors/bigGPU",
                           json={"action": "update", "pci-flavor": {"e.group": "gpu"}})
        self.admin.post("/v1/flavors", {"name": "bm.gpu", "vcpus": 8, "ram": 16384, "disk": 40, "type": "bm"})
        self.admin.request("PUT", "/v1/flavors/bm.gpu/extra-specs", json={"pci_passthrough:pci_flavor": "1:bigGPU"})
        self.run("POST", "/v1/instances", {"name": "gpu1", "flavor": "bm.gpu", "image": "centos",
                                           "networks": [{"network": "net1"}]})
        server = self.server("gpu1", InstanceStatus.ACTIVE)
        devices = [d for r in server["pci_requests"] for d in r["devices"]]
        expect(len(devices) == 1 and devices[0]["extra_info"].get("e.group") == "gpu",
               f"gpu1 got {devices}, expected one GPU")

    def remote_managed_server(self) -> None:
        self.run("POST", "/v1/instances", {"name": "smart1", "flavor": "bm.small", "image": "centos",
                                           "networks": [{"network": "net1", "vnic_type": "remote-managed"}]})
        server = self.server("smart1", InstanceStatus.ACTIVE)
        port = self.admin.get(f"/v1/ports/{server['ports'][0]}")
        profile: dict[str, Any] = port["binding_profile"]
        expect(bool(profile.get("card_serial_number")) and profile.get("vf_num") is not None,
               f"the port's binding profile lacks the card serial or VF number: {profile}")
        expect(port["requested_chassis"] == server["node"],
               f"the port is to be plugged by {port['requested_chassis']!r}, not by {server['node']}'s DPU")

    def free_all(self) -> None:
        for name in ("gpu1", "smart1"):
            self.run("DELETE", f"/v1/instances/{name}")
        busy = [d["address"] for d in self.admin.get("/v1/pci/devices") if d["status"] != "available"]
        expect(not busy, f"devices still in use after delete: {busy}")

