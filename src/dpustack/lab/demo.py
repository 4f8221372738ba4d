"""`dpustack demo`: a 3-node lab, every bare-metal and PCI flow through the API client, one verdict per flow."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dpustack.client import Client
from dpustack.errors import ApiError, DpustackError
from dpustack.lab import lifecycle
from dpustack.lab.demo_pci import PciTour
from dpustack.lab.state import STATE_FILE, LabError, LabState

DEMO_NODES = 3
OPERATION_TIMEOUT = 120.0
Flow = tuple[str, Callable[[], None]]


class FlowFailed(Exception):
    """A flow saw something other than what it expected."""


@dataclass
class FlowResult:
    """The verdict of one flow: passed, failed, or skipped after an earlier failure."""

    name: str
    result: str  # "passed" | "failed" | "skipped"
    seconds: float = 0.0
    message: str = ""


class BareMetalTour:
    """The README's by-hand session, as checks: each flow runs an action and verifies its outcome."""

    def __init__(self, admin: Client, lab: LabState):
        self.admin = admin
        self.lab = lab
        self.ids: dict[str, str] = {}

    def flows(self) -> list[Flow]:
        return [
            ("setup: flavor, image, network", self.setup),
            ("create web1", self.create_web1),
            ("create web2 pinned to a node", self.create_pinned_web2),
            ("add NIC to web1", self.add_nic),
            ("create and attach volume", self.add_volume),
            ("console of web1", self.console),
            ("stop web1", lambda: self.power("stop", {}, "SHUTOFF")),
            ("start web1", lambda: self.power("start", {}, "ACTIVE")),
            ("hard reboot web1", lambda: self.power("reboot", {"type": "hard"}, "ACTIVE")),
            ("soft reboot web1", lambda: self.power("reboot", {"type": "soft"}, "ACTIVE")),
            ("detach volume", self.remove_volume),
            ("remove NIC from web1", self.remove_nic),
            ("other project cannot see web1", self.project_isolation),
            ("create that cannot fit fails cleanly", self.no_fit),
            ("delete web1 and web2", self.delete_all),
        ]

    # -- helpers ---------------------------------------------------------
    def run(self, method: str, path: str, body: dict[str, Any] | None = None, *,
            expect: str = "succeeded") -> dict[str, Any]:
        """Start a long action and wait for it, as `--wait` does; check how it ended."""
        op = self.admin.request(method, path, json=body)
        final = self.admin.wait_operation(op["id"], timeout=OPERATION_TIMEOUT)
        if final["status"] != expect:
            raise FlowFailed(f"{final['action']} ended {final['status']} (expected {expect}): "
                             f"{final.get('error') or 'no error given'}")
        return final

    def server(self, name: str, status: str) -> dict[str, Any]:
        server = self.admin.get(f"/v1/instances/{name}")
        _expect(server["status"] == status, f"{name} is {server['status']}, expected {status}")
        return server

    def ports_of(self, name: str) -> list[dict[str, Any]]:
        return self.admin.get("/v1/ports", instance=name)

    # -- flows -----------------------------------------------------------
    def setup(self) -> None:
        self.admin.post("/v1/flavors", {"name": "bm.small", "vcpus": 8, "ram": 16384, "disk": 40, "type": "bm"})
        image_file = Path(self.lab.image)
        image = self.admin.post("/v1/images", {"name": "centos"})
        image = self.admin.upload_image(image["id"], image_file)
        _expect(image["status"] == "active", f"image is {image['status']} after upload")
        digest = hashlib.sha256(image_file.read_bytes()).hexdigest()
        _expect(image["checksum"] == digest, "image checksum differs from the uploaded file's sha256")
        network = self.admin.post("/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        _expect(bool(network["subnets"]), "network net1 has no subnet")

    def create_web1(self) -> None:
        self.run("POST", "/v1/instances", _server("web1"))
        web1 = self.server("web1", "ACTIVE")
        _expect(bool(web1["node"]), "web1 has no node")
        ports = self.ports_of("web1")
        _expect(len(ports) == 1 and bool(ports[0]["fixed_ips"]), f"web1 should have one addressed port: {ports}")

    def create_pinned_web2(self) -> None:
        busy = {self.admin.get("/v1/instances/web1")["node"]}
        target = next(name for name in self.lab.nodes if name not in busy)
        self.run("POST", "/v1/instances", {**_server("web2"), "node": target})
        web2 = self.server("web2", "ACTIVE")
        _expect(web2["node"] == target, f"web2 landed on {web2['node']}, pinned to {target}")

    def add_nic(self) -> None:
        before = {p["id"] for p in self.ports_of("web1")}
        self.run("POST", "/v1/instances/web1/nics", {"network": "net1"})
        added = [p for p in self.ports_of("web1") if p["id"] not in before]
        _expect(len(added) == 1, f"expected one new port on web1, found {len(added)}")
        self.ids["nic"] = added[0]["id"]

    def add_volume(self) -> None:
        self.admin.post("/v1/volumes", {"name": "data1", "size": 10})
        self.run("POST", "/v1/instances/web1/volumes", {"volume": "data1"})
        volume = self.admin.get("/v1/volumes/data1")
        web1 = self.admin.get("/v1/instances/web1")
        _expect(volume["status"] == "in-use" and volume["instance_id"] == web1["id"],
                f"data1 is {volume['status']} on {volume['instance_id']}, expected in-use on web1")

    def console(self) -> None:
        console = self.admin.get("/v1/instances/web1/console")
        _expect(bool(console.get("url")), "the console has no url")

    def power(self, action: str, body: dict[str, Any], status: str) -> None:
        self.run("POST", f"/v1/instances/web1/{action}", body)
        self.server("web1", status)

    def remove_volume(self) -> None:
        self.run("DELETE", "/v1/instances/web1/volumes/data1")
        volume = self.admin.get("/v1/volumes/data1")
        _expect(volume["status"] == "available" and not volume["instance_id"],
                f"data1 is {volume['status']} after detach")

    def remove_nic(self) -> None:
        self.run("DELETE", f"/v1/instances/web1/nics/{self.ids['nic']}")
        remaining = {p["id"] for p in self.ports_of("web1")}
        _expect(self.ids["nic"] not in remaining and len(remaining) == 1, f"web1 still has ports {remaining}")

    def project_isolation(self) -> None:
        self.admin.post("/v1/projects", {"name": "demo-other"})
        token = self.admin.post("/v1/tokens", {"project": "demo-other", "role": "member"})["token"]
        with self.lab.client(token) as other:
            names = [s["name"] for s in other.get("/v1/instances")]
            _expect("web1" not in names, "project demo-other lists web1")
            try:
                other.get("/v1/instances/web1")
            except ApiError as exc:
                _expect(exc.status == 404, f"expected 404 for another project's server, got {exc.status}")
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
        _expect(web3["status"] == "ERROR" and bool(fault), f"web3 is {web3['status']} with fault {fault!r}")
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
                _expect(exc.status == 404, f"{name} answers {exc.status} after delete")
            else:
                raise FlowFailed(f"{name} still exists after delete")
        self.admin.delete("/v1/volumes/data1")
        leftovers = [p["id"] for p in self.admin.get("/v1/ports") if p.get("instance_id")]
        _expect(not leftovers, f"ports still bound after delete: {leftovers}")


def _server(name: str) -> dict[str, Any]:
    """The create body every demo server uses: bm.small from the centos image on net1."""
    return {"name": name, "flavor": "bm.small", "image": "centos", "networks": [{"network": "net1"}]}


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise FlowFailed(message)


def run_flows(flows: list[Flow], report: Callable[[FlowResult], None]) -> list[FlowResult]:
    """Run flows in order; after the first failure the rest are skipped (they build on each other)."""
    results: list[FlowResult] = []
    for name, flow in flows:
        if results and results[-1].result != "passed":
            result = FlowResult(name, "skipped")
        else:
            began = time.monotonic()
            try:
                flow()
                result = FlowResult(name, "passed", time.monotonic() - began)
            except Exception as exc:  # any surprise is this flow's failure, reported, never a crash
                result = FlowResult(name, "failed", time.monotonic() - began, _message(exc))
        results.append(result)
        report(result)
    return results


def _message(exc: Exception) -> str:
    if isinstance(exc, DpustackError):
        field = f" (field {exc.field})" if exc.field else ""
        return f"{exc.message}{field}"
    if isinstance(exc, (FlowFailed, TimeoutError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_demo(say: lifecycle.Say, report: Callable[[FlowResult], None],
             dataplane: str = "memory") -> tuple[list[FlowResult], Path]:
    """Run the whole demo in a fresh temporary lab, always tearing it down.

    ``dataplane`` "memory": the bare-metal and PCI flows; "ovn": the packet flows of
    :mod:`dpustack.lab.demo_ovn` (needs root). Returns the results and the lab directory; the
    directory (with the logs) is removed when every flow passed and kept for inspection otherwise.
    """
    if dataplane not in lifecycle.DATAPLANES:
        raise LabError(f"unknown data plane '{dataplane}': choose one of {', '.join(lifecycle.DATAPLANES)}")
    if dataplane == "ovn":
        # short: the OVN daemons' unix socket paths must fit in 107 bytes
        base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 40 else "/tmp"
        lab_dir = Path(tempfile.mkdtemp(prefix="dps-demo-", dir=base))
    else:
        lab_dir = Path(tempfile.mkdtemp(prefix="dpustack-demo-"))
    results: list[FlowResult] = []
    try:
        lab = lifecycle.up(lab_dir, DEMO_NODES, say, dataplane=dataplane)
        with lab.client() as admin:
            if dataplane == "ovn":
                from dpustack.lab.demo_ovn import OvnTour

                results = run_flows(OvnTour(admin, lab, say).flows(), report)
            else:
                tour = BareMetalTour(admin, lab)
                results = run_flows(tour.flows() + PciTour(tour).flows(), report)
    finally:
        if (lab_dir / STATE_FILE).exists():
            lifecycle.down(lab_dir)
        if results and all(r.result == "passed" for r in results):
            shutil.rmtree(lab_dir, ignore_errors=True)
    return results, lab_dir
