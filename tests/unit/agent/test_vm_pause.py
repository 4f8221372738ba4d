"""Pausing a VM on its node: the domain's vCPUs stop, the instance shows PAUSED and is reported ``paused``
(its power is on), it stays paused through reconcile passes and an agent restart, and stop, reboot and
start treat it as the rules say (docs/vm.md, "Pause"). A bare-metal node refuses to pause."""

from __future__ import annotations

from dpustack.agent.hardware import DriverSet
from dpustack.drivers.hypervisor import DomainState

from .conftest import vm_drivers
from .test_vm_node import VM, domain, vm_build

PAUSE, UNPAUSE = f"/v1/instances/{VM}/pause", f"/v1/instances/{VM}/unpause"


def reported(agent) -> list[dict]:
    return agent.get("/v1/status").json()["instances"]


def test_a_paused_vm_is_paused_and_on_and_unpaused_it_runs_again(vm_agent):
    vm_build(vm_agent)

    paused = vm_agent.post(PAUSE)

    assert paused.status_code == 200, paused.text
    instance = paused.json()["instance"]
    assert (instance["status"], instance["power_state"]) == ("PAUSED", "on")
    assert [step["name"] for step in paused.json()["steps"]] == ["pause VM"]
    assert domain(vm_agent).state == DomainState.PAUSED
    assert reported(vm_agent) == [{"uuid": VM, "status": "paused"}]
    assert vm_agent.post(PAUSE).json()["instance"]["status"] == "PAUSED"  # paused already: nothing changes

    unpaused = vm_agent.post(UNPAUSE)

    assert unpaused.json()["instance"]["status"] == "ACTIVE" and domain(vm_agent).state == DomainState.RUNNING
    assert domain(vm_agent).boots == 1  # the same guest went on, it was not booted again
    assert vm_agent.post(UNPAUSE).json()["instance"]["status"] == "ACTIVE"
    assert reported(vm_agent) == [{"uuid": VM, "status": "up"}]


def test_a_paused_vm_stays_paused_through_a_reconcile_pass_and_an_agent_restart(start_agent, config_for):
    config = config_for(node_type="vm", drivers={"hypervisor": "memory"})
    first = start_agent(vm_drivers(), config)
    vm_build(first)
    assert first.post(PAUSE).status_code == 200

    assert first.service.reconciler.run().ok
    assert first.get(f"/v1/instances/{VM}").json()["status"] == "PAUSED"

    drivers = first.drivers  # the agent restarts; the host and its paused VM go on
    second = start_agent(DriverSet(drivers.functions, drivers.switch, drivers.storage, drivers.bmc,
                                   hypervisor=drivers.hypervisor), config)

    assert second.get(f"/v1/instances/{VM}").json()["status"] == "PAUSED"
    assert reported(second) == [{"uuid": VM, "status": "paused"}]
    assert domain(second).state == DomainState.PAUSED


def test_a_vm_paused_or_resumed_on_its_host_is_seen_by_the_next_pass(vm_agent):
    vm_build(vm_agent)
    vm_agent.drivers.hypervisor.pause(VM)  # `virsh suspend` on the host

    assert vm_agent.service.reconciler.run().ok
    assert vm_agent.get(f"/v1/instances/{VM}").json()["status"] == "PAUSED"
    vm_agent.drivers.hypervisor.unpause(VM)
    assert vm_agent.service.reconciler.run().ok
    assert vm_agent.get(f"/v1/instances/{VM}").json()["status"] == "ACTIVE"


def test_a_domain_the_host_lost_while_paused_is_defined_again_and_runs(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(PAUSE)
    vm_agent.drivers.hypervisor.undefine(VM)  # its memory is gone with it

    assert vm_agent.service.reconciler.run().ok
    assert domain(vm_agent).state == DomainState.RUNNING
    assert vm_agent.get(f"/v1/instances/{VM}").json()["status"] == "ACTIVE"


def test_a_paused_vm_is_resumed_to_be_stopped_by_its_power_button(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(PAUSE)
    hypervisor = vm_agent.drivers.hypervisor
    hypervisor.faults.clear()

    stopped = vm_agent.post(f"/v1/instances/{VM}/stop")

    assert stopped.status_code == 200, stopped.text
    assert (stopped.json()["instance"]["status"], domain(vm_agent).state) == ("SHUTOFF", DomainState.OFF)
    # resumed, then the power button; a soft stop of a paused guest would have failed (memory driver)
    assert [call for call in hypervisor.faults.calls if call in ("unpause", "stop")] == ["unpause", "stop"]


def test_a_paused_vm_whose_stop_fails_is_paused_again(start_agent, config_for):
    agent = start_agent(vm_drivers(), config_for(node_type="vm", drivers={"hypervisor": "memory"},
                                                 vm_stop_timeout=0.01))
    vm_build(agent)
    agent.post(PAUSE)
    domain(agent).deaf = True  # the guest does not hear the power button...
    agent.drivers.hypervisor.faults.arm("stop", skip=1)  # ...and the plug cannot be pulled

    failed = agent.post(f"/v1/instances/{VM}/stop")

    assert failed.status_code == 502, failed.text
    assert domain(agent).state == DomainState.PAUSED
    assert agent.get(f"/v1/instances/{VM}").json()["status"] == "PAUSED"


def test_a_paused_vm_cannot_hear_a_soft_reboot_but_a_hard_one_resumes_it_rebooted(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(PAUSE)

    soft = vm_agent.post(f"/v1/instances/{VM}/reboot", {"type": "soft"})

    assert soft.status_code == 409
    assert soft.json()["error"]["message"] == (f"instance '{VM}' is PAUSED and cannot hear a soft reboot: "
                                               "unpause it, or reboot it hard")
    assert domain(vm_agent).state == DomainState.PAUSED
    hard = vm_agent.post(f"/v1/instances/{VM}/reboot", {"type": "hard"})
    assert hard.json()["instance"]["status"] == "ACTIVE"
    assert (domain(vm_agent).state, domain(vm_agent).boots) == (DomainState.RUNNING, 2)


def test_a_start_of_a_paused_vm_lets_it_run_on(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(PAUSE)

    assert vm_agent.post(f"/v1/instances/{VM}/start").json()["instance"]["status"] == "ACTIVE"
    assert (domain(vm_agent).state, domain(vm_agent).boots) == (DomainState.RUNNING, 1)


def test_a_vm_that_is_off_is_not_paused_and_a_failed_pause_changes_nothing(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(f"/v1/instances/{VM}/stop")

    refused = vm_agent.post(PAUSE)

    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == f"instance '{VM}' is SHUTOFF: start it first"
    vm_agent.post(f"/v1/instances/{VM}/start")
    vm_agent.drivers.hypervisor.faults.arm("pause")
    failed = vm_agent.post(PAUSE)
    assert failed.status_code == 502 and failed.json()["steps"][0]["name"] == "pause VM"
    assert vm_agent.get(f"/v1/instances/{VM}").json()["status"] == "ACTIVE"
    assert domain(vm_agent).state == DomainState.RUNNING


def test_a_paused_vm_is_deleted(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(PAUSE)

    assert vm_agent.delete(f"/v1/instances/{VM}").status_code == 200
    assert vm_agent.drivers.hypervisor.held == {} and vm_agent.hardware()["functions"] == []


def test_a_bare_metal_node_refuses_to_pause_its_host(built):
    for path in ("pause", "unpause"):
        refused = built.post(f"/v1/instances/inst-1/{path}")

        assert refused.status_code == 409, refused.text
        assert "bare-metal instances cannot be paused or unpaused" in refused.json()["error"]["message"]
    assert built.get("/v1/instances/inst-1").json()["status"] == "ACTIVE"
    assert built.drivers.bmc.power_state() == "on"

