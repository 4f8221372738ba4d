"""The bare-metal tour of `dpustack demo`: the README's by-hand session, flow by flow."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dpustack.client import Client
from dpustack.errors import ApiError
from dpustack.instance_states import InstanceStatus
from dpustack.lab.state import LabState
from dpustack.lab.tour import OPERATION_TIMEOUT, Flow, FlowFailed, Tour, expect


class BareMetalTour(Tour):
    """The README's by-hand session, as checks: each flow runs an action and verifies its outcome."""

    def __init__(self, admin: Client, lab: LabState):
        super().__init__(admin, lab)
        self.ids: dict[str, str] = {}

    def flows(self) -> list[Flow]:
        return [
            ("setup: flavor, image, network", self.setup),
            ("create web1", self.create_web1),
            ("create web2 pinned to a node", self.create_pinned_web2),
            ("add NIC to web1", self.add_nic),
            ("create and attach volume", self.add_volume),
            ("console of web1", self.console),
            ("stop web1", lambda: self.power("stop", {}, InstanceStatus.SHUTOFF)),
            ("start web1", lambda: self.power("start", {}, InstanceStatus.ACTIVE)),
            ("hard reboot web1", lambda: self.power("reboot", {"type": "hard"}, InstanceStatus.ACTIVE)),
            ("soft reboot web1", lambda: self.power("reboot", {"type": "soft"}, InstanceStatus.ACTIVE)),
            ("detach volume", self.remove_volume),
            ("remove NIC from web1", self.remove_nic),
            ("other project cannot see web1", self.project_isolation),
            ("create that cannot fit fails cleanly", self.no_fit),
            ("delete web1 and web2", self.delete_all),
        ]

    # -- helpers ---------------------------------------------------------
    def ports_of(self, name: str) -> list[dict[str, Any]]:
        return self.admin.get("/v1/ports", instance=name)

    # -- flows -----------------------------------------------------------
    def setup(self) -> None:
        self.admin.post("/v1/flavors", {"name": "bm.small", "vcpus": 8, "ram": 16384, "disk": 40, "type": "bm"})
        image_file = Path(self.lab.image)
        image = self.admin.post("/v1/images", {"name": "centos"})
        image = self.admin.upload_image(image["id"], image_file)
        expect(image["status"] == "active", f"image is {image['status']} after upload")
        digest = hashlib.sha256(image_file.read_bytes()).hexdigest()
        expect(image["checksum"] == digest, "image checksum differs from the uploaded file's sha256")
        network = self.admin.post("/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        expect(bool(network["subnets"]), "network net1 has no subnet")

    def create_web1(self) -> None:
        self.run("POST", "/v1/instances", _server("web1"))
        web1 = self.server("web1", InstanceStatus.ACTIVE)
        expect(bool(web1["node"]), "web1 has no node")
        ports = self.ports_of("web1")
        expect(len(ports) == 1 and bool(ports[0]["fixed_ips"]), f"web1 should have one addressed port: {ports}")

    def create_pinned_web2(self) -> None:
        busy = {self.admin.get("/v1/instances/web1")["node"]}
        target = next(name for name in self.lab.nodes if name not in busy)
        self.run("POST", "/v1/instances", {**_server("web2"), "node": target})
        web2 = self.server("web2", InstanceStatus.ACTIVE)
        expect(web2["node"] == target, f"web2 landed on {web2['node']}, pinned to {target}")

    def add_nic(self) -> None:
        before = {p["id"] for p in self.ports_of("web1")}
        self.run("POST", "/v1/instances/web1/nics", {"network": "net1"})
        added = [p for p in self.ports_of("web1") if p["id"] not in before]
        expect(len(added) == 1, f"expected one new port on web1, found {len(added)}")
        self.ids["nic"] = added[0]["id"]

    def add_volume(self) -> None:
        created = self.admin.post("/v1/volumes", {"name": "data1", "size": 10})  # `creating` until written
        final = self.admin.wait_operation(created["operation_id"], timeout=OPERATION_TIMEOUT)
        expect(final["status"] == "succeeded", f"creating data1 ended {final['status']}: {final.get('error')}")
        self.run("POST", "/v1/instances/web1/volumes", {"volume": "data1"})
        volume = self.admin.get("/v1/volumes/data1")
        web1 = self.admin.get("/v1/instances/web1")
        expect(volume["status"] == "in-use" and volume["instance_id"] == web1["id"],
               f"data1 is {volume['status']} on {volume['instance_id']}, expected in-use on web1")

    def console(self) -> None:
        console = self.admin.get("/v1/instances/web1/console")
        expect(bool(console.get("url")), "the console has no url")

    def power(self, action: str, body: dict[str, Any], status: InstanceStatus) -> None:
        self.run("POST", f"/v1/instances/web1/{action}", body)
        self.server("web1", status)

    def remove_volume(self) -> None:
        self.run("DELETE", "/v1/instances/web1/volumes/data1")
        volume = self.admin.get("/v1/volumes/data1")
        expect(volume["status"] == "available" and not volume["instance_id"],
               f"data1 is {volume['status']} after detach")

    def remove_nic(self) -> None:
        self.run("DELETE", f"/v1/instances/web1/nics/{self.ids['nic']}")
        remaining = {p["id"] for p in self.ports_of("web1")}
        expect(self.ids["nic"] not in remaining and len(remaining) == 1, f"web1 still has ports {remaining}")

    def project_isolation(self) -> None:
        self.admin.post("/v1/projects", {"name": "demo-other"})
        token = self.admin.post("/v1/tokens", {"project": "demo-other", "role": "member"})["token"]
        with self.lab.client(token) as other:
            names = [s["name"] for s in other.get("/v1/instances")]
            expect("web1" not in names, "project demo-other lists web1")
            try:
                other.get("/v1/instances/web1")
            except ApiError as exc:
                expect(exc.status == 404, f"expected 404 for another project's server, got {exc.status}")
            else:
                raise FlowFailed("project demo-other can read web1")

    def no_fit(self) -> None:
        """Fill every free node, then one more create must fail with a readable fault."""
        fillers = [f"filler{i}" for i, _ in enumerate(self.free_nodes(), start=1)]
        for name in fillers:
            self.run("POST", "/v1/instances", _server(name))
        final = self.run("POST", "/v1/instances", _server("web3"), expect="failed")
        web3 = self.admin.get(f"/v1/instances/{final['instance_id']}")
        fault = (web3.get("fault") or {}).get("message") or ""
        expect(web3["status"] == InstanceStatus.ERROR and bool(fault), f"web3 is {web3['status']} with fault {fault!r}")
        for name in [*fillers, "web3"]:
            self.run("DELETE", f"/v1/instances/{name}")

    def free_nodes(self) -> list[str]:
        return [n["hostname"] for n in self.admin.get("/v1/nodes") if n["status"] == "up" and not n["instance_count"]]

    def delete_all(self) -> None:
        for name in ("web1", "web2"):
            self.run("DELETE", f"/v1/instances/{name}")
            try:
                self.admin.get(f"/v1/instances/{name}")
            except ApiError as exc:
                expect(exc.status == 404, f"{name} answers {exc.status} after delete")
            else:
                raise FlowFailed(f"{name} still exists after delete")
        self.admin.delete("/v1/volumes/data1")
        leftovers = [p["id"] for p in self.admin.get("/v1/ports") if p.get("instance_id")]
        expect(not leftovers, f"ports still bound after delete: {leftovers}")


def _server(name: str) -> dict[str, Any]:
    """The create body every demo server uses: bm.small from the centos image on net1."""
    return {"name": name, "flavor": "bm.small", "image": "centos", "networks": [{"network": "net1"}]}
