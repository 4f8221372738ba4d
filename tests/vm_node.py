"""A VM node for controller tests, while the agent cannot run `vm` nodes yet (its config refuses them).

It joins a `harness.Cloud` as a node's agent would: enrolled as `vm`, it
reports with its own report token, its host cells read from the memory
hypervisor driver with its own instances' domains left out (as the agent's
reporter does), and it answers the controller's calls of a build, a delete and
a password (set in the VM through its guest agent) with the contract's bodies,
keeping every build request and every password it was sent. What the
controller does with the answers (claims, placements, faults) is the real
controller's.
"""

from __future__ import annotations

from typing import Any

import httpx

from dpustack.contract.instances import (BuildRequest, InstanceOut, InstanceResult, PasswordRequest, StepLog,
                                         StepsResult)
from dpustack.contract.node import NodeReport, ReportedInstance
from dpustack.contract.numa import NumaCell
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver


class VmNode:
    """One fake VM node of `cloud`, reachable at http://<hostname> through the cloud's agent router."""

    def __init__(self, cloud: Any, hostname: str, cells: list[NumaCell | dict[str, Any]], *,
                 others: tuple[dict[str, Any], ...] = (), dedicated_cpus: str = ""):
        self.cloud = cloud
        self.hostname = hostname
        self.hypervisor = MemoryHypervisorDriver(cells=cells, others=others, dedicated_cpus=dedicated_cpus)
        self.builds: dict[str, BuildRequest] = {}  # uuid -> the build request, while the instance exists
        self.calls: list[tuple[str, str]] = []
        self.passwords: dict[str, dict[str, str]] = {}  # uuid -> user -> the password the VM was given
        self.guest_agent_answers = True  # False: a password call fails as libvirt's does without a guest agent
        enrolment = cloud.call("POST", "/v1/nodes", {"hostname": hostname, "node_type": "vm"}, expect=201)
        self.token = enrolment["report_token"]
        cloud.agent_tokens[hostname] = self.token  # so that `cloud.report()` reports for it too
        cloud.router.agents[hostname] = self
        self.report()

    def report_body(self) -> dict[str, Any]:
        """The report its agent would send now."""
        cells = self.hypervisor.topology(ignore=set(self.builds))
        built = list(self.builds.values())
        return NodeReport(
            hostname=self.hostname, ready=True, node_type="vm", dpu_model="BF2",
            total_cpu=sum(len(c.cpus) for c in cells), used_cpu=sum(b.flavor.vcpus for b in built),
            total_mem=sum(c.memory_mib for c in cells), used_mem=sum(b.flavor.ram for b in built),
            instances=[ReportedInstance(uuid=b.uuid, status="up") for b in built],
            agent_url=f"http://{self.hostname}", numa_cells=[c.model_dump() for c in cells]).body()

    def report(self, **changes: Any) -> dict[str, Any]:
        """Send the report, with `changes`; the node as the controller answers it."""
        answer = self.cloud.api.post("/v1/nodes/report", json={**self.report_body(), **changes},
                                     headers={"Authorization": f"Bearer {self.token}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    # -- the agent API, as the cloud's AgentRouter (and `cloud.report()`) call it --------------------------
    def get(self, path: str) -> httpx.Response:
        assert path == "/v1/status", path
        return httpx.Response(200, json={**self.report_body(), "orphans": {}})

    def request(self, method: str, path: str, *, content: bytes = b"", headers: Any = None) -> httpx.Response:
        self.calls.append((method, path))
        if (method, path) == ("POST", "/v1/instances"):
            return self._build(BuildRequest.model_validate_json(content))
        if method == "POST" and path.startswith("/v1/instances/") and path.endswith("/password"):
            return self._set_password(path.split("/")[3], PasswordRequest.model_validate_json(content))
        if method == "DELETE" and path.startswith("/v1/instances/") and path.count("/") == 3:
            self.builds.pop(path.rsplit("/", 1)[1], None)
            return _json(StepsResult(steps=[_step("delete domain")]))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"{method} {path}: not here"}})

    def _build(self, request: BuildRequest) -> httpx.Response:
        self.builds[request.uuid] = request
        instance = InstanceOut(uuid=request.uuid, name=request.name, status="ACTIVE", power_state="on",
                               vcpus=request.flavor.vcpus, ram=request.flavor.ram, nics=[], volumes=[])
        return _json(InstanceResult(instance=instance, steps=[_step("define and start domain")]))


    def _set_password(self, uuid: str, request: PasswordRequest) -> httpx.Response:
        step = f"set password of {request.user} in VM"
        if not self.guest_agent_answers:
            message = (f"set password of instance {uuid} failed at step '{step}' (rolled back): cannot set the "
                       f"password of '{request.user}' in domain {uuid} through its guest agent: Guest agent is not "
                       "responding: QEMU guest agent is not connected")
            failed = StepLog(name=step, status="failed", duration_ms=5000, error=message)
            return httpx.Response(502, json={"error": {"code": "driver_error", "message": message},
                                             "steps": [failed.model_dump()]})
        self.passwords.setdefault(uuid, {})[request.user] = request.password.get_secret_value()
        built = self.builds[uuid]
        instance = InstanceOut(uuid=uuid, name=built.name, status="ACTIVE", power_state="on",
                               vcpus=built.flavor.vcpus, ram=built.flavor.ram, nics=[], volumes=[])
        return _json(InstanceResult(instance=instance, steps=[_step(step)]))


def _step(name: str) -> StepLog:
    return StepLog(name=name, status="done", duration_ms=1)


def _json(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body.model_dump(mode="json"))
