"""The instance runtime: bare metal on the memory BMC, and a runtime with several instances per node.

The second is a small fake here, the shape a VM runtime has: each instance has
its own power, so stopping one leaves the others running and the reconciler
reads each one back on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Set
from pathlib import Path

import pytest

from dpustack.agent.compute import Compute
from dpustack.agent.consoles import Consoles
from dpustack.agent.instance_runtime import BareMetalRuntime, InstanceRuntime
from dpustack.agent.reconciler import Reconciler
from dpustack.agent.store import AgentStore
from dpustack.agent.wiring import Wiring
from dpustack.contract.instances import BuildRequest
from dpustack.drivers.bmc import Console, RebootKind
from dpustack.drivers.bmc.memory import MemoryBmcDriver, MemorySerialConsole
from dpustack.errors import Conflict, DriverError, NotFound
from dpustack.instance_states import PowerState

from .conftest import build_request, memory_drivers


# -- bare metal -----------------------------------------------------------------
def test_a_bare_metal_instance_is_powered_as_its_host():
    bmc = MemoryBmcDriver(console_url="https://bmc-1/console")
    runtime = BareMetalRuntime(bmc)

    runtime.switch_power("inst-1", "on")
    assert (bmc.power_state(), runtime.power_state("inst-1")) == ("on", "on")
    runtime.power_off("inst-1")
    assert (bmc.power_state(), runtime.power_state("inst-1")) == ("off", "off")
    with pytest.raises(DriverError, match="soft reboot needs a running host"):
        runtime.reboot("inst-1", "soft")
    runtime.reboot("inst-1", "hard")
    assert bmc.power_state() == "on"
    assert runtime.console("inst-1") == Console(type="html5", url="https://bmc-1/console")


def test_a_bare_metal_node_has_room_for_one_instance():
    runtime = BareMetalRuntime(MemoryBmcDriver())

    runtime.check_room("inst-1", set())
    runtime.check_room("inst-1", {"inst-1"})  # building it again
    with pytest.raises(Conflict, match="already hosts instance 'inst-1'") as caught:
        runtime.check_room("inst-2", {"inst-1"})
    assert caught.value.field == "uuid"


# -- several instances per node -------------------------------------------------
class SeveralInstances(InstanceRuntime):
    """Instances with a power state each, as VMs on one host have."""

    machine = "VM"

    def __init__(self) -> None:
        self.power: dict[str, PowerState] = {}
        self.frozen: set[str] = set()
        self.serial: dict[str, MemorySerialConsole] = {}

    def check_room(self, uuid: str, hosted: Set[str]) -> None:
        """Room for any number of instances."""

    def power_on(self, uuid: str) -> None:
        self.power[uuid] = "on"

    def power_off(self, uuid: str) -> None:
        self.power[uuid] = "off"

    def reboot(self, uuid: str, kind: RebootKind) -> None:
        self.power[uuid] = "on"

    def power_state(self, uuid: str) -> PowerState:
        return self.power.get(uuid, "off")

    def pause(self, uuid: str) -> None:
        self.frozen.add(uuid)

    def unpause(self, uuid: str) -> None:
        self.frozen.discard(uuid)

    def paused(self, uuid: str) -> bool:
        return uuid in self.frozen

    def console(self, uuid: str) -> Console:
        return Console(type="vnc", url=f"vnc://dpu-node-1/{uuid}")

    def serial_console(self, uuid: str) -> MemorySerialConsole:
        return self.serial.setdefault(uuid, MemorySerialConsole())


class Node:
    """The compute role and the reconciler of one node over memory drivers and ``runtime``."""

    def __init__(self, state_dir: Path, runtime: SeveralInstances):
        self.runtime = runtime
        lock = threading.RLock()
        self.store = AgentStore(state_dir / "agent.db")
        drivers = memory_drivers()
        wiring = Wiring(self.store, drivers)
        self.compute = Compute(self.store, runtime, wiring, bridge="br-int", lock=lock,
                               consoles=Consoles(state_dir / "consoles", runtime))
        self.reconciler = Reconciler(self.store, drivers, wiring, runtime, lock=lock)

    def status(self, uuid: str) -> tuple[str, str]:
        instance = self.compute.instance(uuid)
        return instance["status"], instance["power_state"]


def _request(uuid: str, n: int) -> BuildRequest:
    return BuildRequest.model_validate(build_request(
        uuid=uuid, networks=[{"port_id": f"port-{n}", "mac": f"aa:bb:cc:00:01:0{n}"}],
        volumes=[{"volume_id": f"vol-{n}", "uri": f"nvmf://10.0.0.5/vol-{n}", "bootable": True}]))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path, SeveralInstances())
    node.compute.build(_request("vm-1", 1))
    node.compute.build(_request("vm-2", 2))
    yield node
    node.store.close()


def test_two_instances_on_one_node_are_each_built_and_powered_on(node: Node):
    assert [i["uuid"] for i in node.compute.instances()] == ["vm-1", "vm-2"]
    assert node.status("vm-1") == node.status("vm-2") == ("ACTIVE", "on")


def test_stopping_one_instance_leaves_the_other_running(node: Node):
    _, steps = node.compute.set_power("vm-1", "off")

    assert [step.name for step in steps] == ["power off VM"]
    assert (node.status("vm-1"), node.status("vm-2")) == (("SHUTOFF", "off"), ("ACTIVE", "on"))


def test_the_reconciler_reads_each_instance_power_on_its_own(node: Node):
    node.runtime.power["vm-2"] = "off"  # vm-2's guest ran `shutdown`

    assert node.reconciler.run().ok
    assert (node.status("vm-1"), node.status("vm-2")) == (("ACTIVE", "on"), ("SHUTOFF", "off"))


def test_pausing_one_instance_leaves_the_other_running(node: Node):
    _, steps = node.compute.set_paused("vm-1", True)

    assert [step.name for step in steps] == ["pause VM"]
    assert (node.status("vm-1"), node.status("vm-2")) == (("PAUSED", "on"), ("ACTIVE", "on"))
    assert node.reconciler.run().ok
    assert node.status("vm-1") == ("PAUSED", "on")


def test_a_bare_metal_host_cannot_be_paused():
    runtime = BareMetalRuntime(MemoryBmcDriver())

    for operation in (runtime.pause, runtime.unpause):
        with pytest.raises(Conflict, match="bare-metal instances cannot be paused or unpaused") as caught:
            operation("inst-1")
        assert caught.value.field == "uuid"
    assert runtime.paused("inst-1") is False


def test_each_instance_has_its_own_console(node: Node):
    assert node.compute.console("vm-2") == Console(type="vnc", url="vnc://dpu-node-1/vm-2")


def test_each_instance_console_is_logged_apart_and_shared_by_its_users(node: Node):
    consoles = node.compute.consoles
    seen: list[bytes] = []
    stop = consoles.subscribe("vm-1", seen.append)

    node.runtime.serial["vm-1"].emit(b"vm-1 login: ")
    node.runtime.serial["vm-2"].emit(b"vm-2 login: ")
    consoles.write("vm-1", b"root\r")  # echoed by the pretend port
    stop()
    node.runtime.serial["vm-1"].emit(b"Password: ")

    assert seen == [b"vm-1 login: ", b"root\r"]
    assert consoles.log("vm-1", 4096) == b"vm-1 login: root\rPassword: "
    assert consoles.log("vm-2", 4096) == b"vm-2 login: "
    assert consoles.log("vm-1", 9) == b"Password: "[-9:]


def test_deleting_an_instance_closes_its_console_and_removes_its_log(node: Node, tmp_path: Path):
    node.runtime.serial["vm-1"].emit(b"booting\n")
    node.compute.delete("vm-1")

    assert not (tmp_path / "consoles" / "vm-1.log").exists()
    with pytest.raises(NotFound, match="no console log"):
        node.compute.consoles.log("vm-1", 100)
    with pytest.raises(NotFound, match="no open console"):
        node.compute.consoles.write("vm-1", b"x")
    assert node.compute.consoles.log("vm-2", 100) == b""


def test_a_console_log_is_rotated_and_read_across_the_rotation(node: Node, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("dpustack.agent.consoles.LOG_LIMIT", 10)
    for chunk in (b"0123456789", b"abcdef"):
        node.runtime.serial["vm-2"].emit(chunk)

    assert (tmp_path / "consoles" / "vm-2.log.1").read_bytes() == b"0123456789"
    assert node.compute.consoles.log("vm-2", 8) == b"89abcdef"


def test_an_agent_restart_reopens_the_consoles_of_recorded_instances(node: Node, tmp_path: Path):
    node.runtime.serial["vm-1"].emit(b"before\n")
    node.compute.consoles.close_all()
    again = Consoles(tmp_path / "consoles", node.runtime)
    again.sync(["vm-1", "vm-2"])
    node.runtime.serial["vm-1"].emit(b"after\n")

    assert again.log("vm-1", 100) == b"before\nafter\n"
