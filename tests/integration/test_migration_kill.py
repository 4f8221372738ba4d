"""kill -9 of the controller, of the source's agent and of the target's agent in the middle of a cold migration.

Real processes, one lab for the module: `dpustack lab up --bm 2` (memory drivers, the storage node's
qemu-storage-daemon, the controller on the qcow2 volume backend), its memory BMCs made slow (`power_seconds`:
each power change takes 1 s, so the test catches a step while it runs), the controller with a 2 s operation lease
and 0.5 s retry waits; each of them restarted once so (`lab restart`), and every later restart with that same
command line. A bare-metal server moves from dpu-bm-1 to dpu-bm-2 (BM -> BM is the cold migration's walk); when
the API shows the chosen step running, `lab kill NAME --signal KILL`, then `lab restart NAME`. What a user sees
then: the server on exactly one node (the API says which; the other node's agent has no instance and no function
for it), ACTIVE or VERIFY_MIGRATE (which migrate-confirm or -revert take), its volume attached there only.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli_process import run, take_down
from dpustack.client import Client
from dpustack.controller.services import node_credentials
from dpustack.controller.services.nodes import get_node
from dpustack.controller.settings import Settings
from dpustack.db.models import OperationStep
from dpustack.db.session import make_engine
from dpustack.lab import processes
from dpustack.lab.state import LabState

BM1, BM2 = "dpu-bm-1", "dpu-bm-2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    lab_dir = tmp_path_factory.mktemp("migkill") / "lab"
    try:
        run("lab", "up", "--bm", "2", "--dir", str(lab_dir))
        state = LabState.load(lab_dir)
        assert state is not None
        for hostname in (BM1, BM2):
            config = Path(state.process(hostname).config or "")
            text = config.read_text()
            assert "[bmc.memory]\n" in text
            config.write_text(text.replace("[bmc.memory]\n", "[bmc.memory]\npower_seconds = 1.0\n"))
        state.process("controller").env.update({"DPUSTACK_LEASE_SECONDS": "2", "DPUSTACK_STEP_RETRY_INTERVAL": "0.5",
                                                "DPUSTACK_STEP_RETRY_SECONDS": "60"})
        state.save()
        for name in ("controller", BM1, BM2):
            run("lab", "restart", name, "--dir", str(lab_dir))
        state = LabState.load(lab_dir)
        assert state is not None
        with _client(state) as client:
            client.post("/v1/flavors", {"name": "bm.small", "vcpus": 8, "ram": 16384, "disk": 1, "type": "bm"})
            image = client.post("/v1/images", {"name": "tiny"})
            boot = tmp_path_factory.mktemp("image") / "tiny.img"
            boot.write_bytes(b"\x00" * 510 + b"\x55\xaa")
            client.upload_image(image["id"], boot)
            client.post("/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        yield state
    finally:
        take_down(lab_dir)


def _client(lab: LabState) -> Client:
    return Client(lab.controller_url, lab.admin_token(), timeout=60, verify=lab.tls())


def _agent(lab: LabState, hostname: str) -> httpx.Client:
    """The node's agent, called as the controller calls it (its current credential, the lab CA)."""
    settings = Settings(home=Path(lab.controller_home))
    engine = make_engine(f"sqlite:///{settings.home / 'controller.db'}")
    try:
        with Session(engine) as session:
            credential = node_credentials.current(get_node(session, hostname), settings.secret_key_file)
    finally:
        engine.dispose()
    return httpx.Client(base_url=lab.process(hostname).url, verify=lab.tls(), timeout=30,
                        headers={"Authorization": f"Bearer {credential}"})


def _wait_for_step(client: Client, operation_id: str, step: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = client.get(f"/v1/operations/{operation_id}")
        if any(s["name"] == step and s["status"] == "running" for s in op["steps"]):
            return
        assert op["status"] in ("pending", "running"), op
        time.sleep(0.05)
    raise AssertionError(f"step {step} was not seen running within {timeout:.0f}s")


def _wait_for_functions(lab: LabState, hostname: str, timeout: float = 30) -> None:
    """Until the node's agent has made functions: the build there is under way (its host powers on next)."""
    deadline = time.monotonic() + timeout
    with _agent(lab, hostname) as agent:
        while not agent.get("/v1/functions").json():
            assert time.monotonic() < deadline, f"{hostname} made no function within {timeout:.0f}s"
            time.sleep(0.02)


def _kill(lab: LabState, name: str) -> None:
    """kill -9 of the lab's process `name`, at once (the step still runs); wait until it is gone."""
    proc = lab.process(name)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.is_alive(proc.pid, proc.started):
        assert time.monotonic() < deadline, f"{name} is still alive"
        time.sleep(0.05)


def _restart(lab: LabState, name: str, pause: float = 1.0) -> None:
    """`lab restart NAME` after `pause` s (the rest of the cloud meets it dead meanwhile): its recorded command
    line again."""
    time.sleep(pause)
    run("lab", "restart", name, "--dir", lab.dir)


def _recorded_step(lab: LabState, operation_id: str, step: str) -> str:
    """The step's status in the controller's database (read while no controller runs)."""
    engine = make_engine(f"sqlite:///{Path(lab.controller_home) / 'controller.db'}")
    try:
        with Session(engine) as session:
            return session.scalars(select(OperationStep.status).where(OperationStep.operation_id == operation_id,
                                                                      OperationStep.name == step)).one()
    finally:
        engine.dispose()


def _on_exactly(lab: LabState, client: Client, server: dict[str, Any], node: str) -> None:
    """What the user sees: the server on `node`, its volume attached there only, the other node's agent
    holding nothing of it."""
    other = BM2 if node == BM1 else BM1
    shown = client.get(f"/v1/instances/{server['id']}")
    assert (shown["node"], shown["fault"]) == (node, None), shown
    with _agent(lab, node) as here, _agent(lab, other) as there:
        assert [i["uuid"] for i in here.get("/v1/instances").json()] == [server["id"]]
        functions = {f["id"] for f in here.get("/v1/functions").json()}
        assert {f"net-{nic['port_id']}" for nic in shown["nics"]} <= functions, functions
        assert len(functions) == len(shown["nics"]) + len(shown["volumes"]), functions
        assert here.get("/v1/bmc/power").json()["power_state"] == "on"
        assert there.get("/v1/instances").json() == []  # a bare-metal node: nothing else runs there
        assert there.get("/v1/functions").json() == []
    for volume_id in shown["volumes"]:
        volume = client.get(f"/v1/volumes/{volume_id}")
        assert volume["status"] == "in-use" and [a["node"] for a in volume["attachments"]] == [node], volume


def _build(client: Client, name: str) -> dict[str, Any]:
    op = client.post("/v1/instances", {"name": name, "flavor": "bm.small", "image": "tiny", "node": BM1,
                                       "networks": [{"network": "net1"}]})
    assert client.wait_operation(op["id"], timeout=60)["status"] == "succeeded"
    return client.get(f"/v1/instances/{name}")


def _delete(client: Client, name: str) -> None:
    op = client.delete(f"/v1/instances/{name}")
    assert client.wait_operation(op["id"], timeout=60)["status"] == "succeeded", op


def test_a_controller_killed_while_the_target_builds_resumes_the_migration_to_verify(lab: LabState) -> None:
    with _client(lab) as client:
        server = _build(client, "k1")
        op = client.post("/v1/instances/k1/migrate", {"node": BM2})
        _wait_for_step(client, op["id"], "build_on_target")
        _wait_for_functions(lab, BM2)
    _kill(lab, "controller")
    assert _recorded_step(lab, op["id"], "build_on_target") == "running"  # cut in the middle of the step
    _restart(lab, "controller")
    with _client(lab) as client:
        final = client.wait_operation(op["id"], timeout=60)
        assert final["status"] == "succeeded", final
        assert client.get("/v1/instances/k1")["status"] == "VERIFY_MIGRATE"
        _on_exactly(lab, client, server, BM2)
        assert client.post("/v1/instances/k1/migrate-confirm")["status"] == "ACTIVE"
        _delete(client, "k1")


def test_a_source_agent_killed_while_it_stops_the_server_leaves_it_active_where_it_was(lab: LabState) -> None:
    with _client(lab) as client:
        server = _build(client, "k2")
        op = client.post("/v1/instances/k2/migrate", {"node": BM2})
        _wait_for_step(client, op["id"], "stop_on_source")
        time.sleep(0.3)  # the call reached the agent: its host's power-off takes 1 s
        _kill(lab, BM1)
        _restart(lab, BM1)
        final = client.wait_operation(op["id"], timeout=60)
        assert final["status"] == "failed" and final["error"].startswith("stop_on_source: node dpu-bm-1"), final
        assert client.get("/v1/instances/k2")["status"] == "ACTIVE"
        _on_exactly(lab, client, server, BM1)
        _delete(client, "k2")


def test_a_target_agent_killed_while_it_builds_is_waited_for_and_the_server_stays_where_it_was(
        lab: LabState) -> None:
    with _client(lab) as client:
        server = _build(client, "k3")
        op = client.post("/v1/instances/k3/migrate", {"node": BM2})
        _wait_for_step(client, op["id"], "build_on_target")
        _wait_for_functions(lab, BM2)
        _kill(lab, BM2)
        _restart(lab, BM2)
        final = client.wait_operation(op["id"], timeout=60)
        assert final["status"] == "failed" and final["error"].startswith("build_on_target: node dpu-bm-2"), final
        build = next(s for s in final["steps"] if s["name"] == "build_on_target")
        assert build["status"] == "failed" and build["detail"]["attempts"] >= 1, build  # its undo waited for it
        assert "agent unreachable" in build["detail"]["last_error"], build
        assert client.get("/v1/instances/k3")["status"] == "ACTIVE"
        _on_exactly(lab, client, server, BM1)
        _delete(client, "k3")
