"""Resizing a VM on its node: the domain stopped, defined again with the new vCPUs, memory and placement (its
functions in the same guest slots with the same MACs) and started again if it ran; a revert is a resize back;
a failure leaves the old definition, running as it was; the record keeps the flavor the domain has, for the
reconciler and a restarted agent (docs/vm.md, "Resize")."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dpustack.agent.hardware import DriverSet
from dpustack.drivers.hypervisor import DomainState

from .conftest import MAC_A, MAC_B, vm_drivers
from .test_vm_node import PLACEMENT, VM, domain, hostdevs, vm_build

RESIZE = f"/v1/instances/{VM}/resize"
SMALL = {"name": "vm.small", "vcpus": 2, "ram": 512, "disk": 1}
MEDIUM = {"name": "vm.medium", "vcpus": 4, "ram": 2048, "disk": 1}
MEDIUM_PLACEMENT = {"cells": [{"guest_cell": 0, "host_cell": 1, "vcpus": [0, 1, 2, 3], "host_cpus": [4, 5, 6, 7],
                               "memory_mib": 2048}], "pinned": True, "page_size_kib": None}


def to_medium(agent):
    return agent.post(RESIZE, {"flavor": MEDIUM, "numa_placement": MEDIUM_PLACEMENT})


def sized(agent) -> tuple[int, int, list[str]]:
    """The domain definition's vCPUs, memory (MiB) and the host CPU each vCPU is pinned to."""
    xml = ET.fromstring(domain(agent).xml)
    assert xml.find("memory").get("unit") == "MiB"
    return (int(xml.find("vcpu").text), int(xml.find("memory").text),
            [pin.get("cpuset") for pin in xml.iterfind("cputune/vcpupin")])


def macs(agent) -> dict[str, str]:
    """The MAC of each NIC, as the agent shows the instance (its function carries it)."""
    return {nic["port_id"]: nic["mac"] for nic in agent.get(f"/v1/instances/{VM}").json()["nics"]}


def test_a_running_vm_is_stopped_defined_with_the_new_flavor_and_started_again(vm_agent):
    vm_build(vm_agent)
    slots, nic_macs = hostdevs(vm_agent), macs(vm_agent)
    assert sized(vm_agent) == (2, 512, ["5", "6"])

    resized = to_medium(vm_agent)

    assert resized.status_code == 200, resized.text
    assert [step["name"] for step in resized.json()["steps"]] == [
        "power off VM", "define VM with flavor vm.medium", "record flavor", "power on VM"]
    instance = resized.json()["instance"]
    assert (instance["status"], instance["vcpus"], instance["ram"]) == ("ACTIVE", 4, 2048)
    assert sized(vm_agent) == (4, 2048, ["4", "5", "6", "7"])
    assert domain(vm_agent).state == DomainState.RUNNING and domain(vm_agent).boots == 2
    assert hostdevs(vm_agent) == slots and hostdevs(vm_agent, "live") == slots  # same functions, same slots
    assert macs(vm_agent) == nic_macs
    assert to_medium(vm_agent).json()["steps"] == []  # that flavor already: nothing to do
    assert domain(vm_agent).boots == 2


def test_a_revert_is_a_resize_back_to_the_old_flavor(vm_agent):
    vm_build(vm_agent)
    to_medium(vm_agent)

    reverted = vm_agent.post(RESIZE, {"flavor": SMALL, "numa_placement": PLACEMENT})

    assert reverted.status_code == 200, reverted.text
    assert (reverted.json()["instance"]["vcpus"], reverted.json()["instance"]["ram"]) == (2, 512)
    assert sized(vm_agent) == (2, 512, ["5", "6"])
    assert domain(vm_agent).state == DomainState.RUNNING


def test_a_stopped_vm_is_resized_and_stays_off(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(f"/v1/instances/{VM}/stop")

    resized = to_medium(vm_agent)

    assert [step["name"] for step in resized.json()["steps"]] == ["define VM with flavor vm.medium",
                                                                   "record flavor"]
    assert resized.json()["instance"]["status"] == "SHUTOFF"
    assert sized(vm_agent)[:2] == (4, 2048)
    assert domain(vm_agent).state == DomainState.OFF and domain(vm_agent).boots == 1


def test_functions_plugged_later_keep_their_slots_through_a_resize(vm_agent):
    vm_build(vm_agent)
    vm_agent.delete(f"/v1/instances/{VM}/nics/port-a")  # slot 1 is free again...
    vm_agent.post(f"/v1/instances/{VM}/volumes", {"volume_id": "vol-data", "uri": "nbd://10.0.0.5/d"})
    slots = hostdevs(vm_agent)  # ...and the data volume took it; port-b stays in slot 2
    assert {alias: bus for alias, (_, bus) in slots.items()} == {"storage-vol-boot": 1, "storage-vol-data": 2,
                                                                "net-port-b": 3}

    assert to_medium(vm_agent).status_code == 200

    assert hostdevs(vm_agent) == slots
    assert macs(vm_agent) == {"port-b": MAC_B}


def test_a_definition_the_host_refuses_leaves_the_old_flavor_running(vm_agent):
    vm_build(vm_agent)
    vm_agent.drivers.hypervisor.faults.arm("redefine")

    failed = to_medium(vm_agent)

    assert failed.status_code == 502, failed.text
    steps = {step["name"]: step["status"] for step in failed.json()["steps"]}
    assert steps == {"power off VM": "undone", "define VM with flavor vm.medium": "failed"}
    assert sized(vm_agent) == (2, 512, ["5", "6"])
    assert domain(vm_agent).state == DomainState.RUNNING
    instance = vm_agent.get(f"/v1/instances/{VM}").json()
    assert (instance["status"], instance["vcpus"], instance["ram"]) == ("ACTIVE", 2, 512)


def test_a_vm_that_cannot_start_with_the_new_flavor_runs_again_with_the_old_one(vm_agent):
    vm_build(vm_agent)
    vm_agent.drivers.hypervisor.faults.arm("start")  # once: the start of the old definition succeeds

    failed = to_medium(vm_agent)

    assert failed.status_code == 502, failed.text
    assert [(step["name"], step["status"]) for step in failed.json()["steps"]] == [
        ("power off VM", "undone"), ("define VM with flavor vm.medium", "undone"), ("record flavor", "undone"),
        ("power on VM", "failed")]
    assert sized(vm_agent) == (2, 512, ["5", "6"])
    assert domain(vm_agent).state == DomainState.RUNNING
    assert vm_agent.get(f"/v1/instances/{VM}").json()["vcpus"] == 2


def test_the_reconciler_and_a_restarted_agent_keep_the_new_flavor(start_agent, config_for):
    config = config_for(node_type="vm", drivers={"hypervisor": "memory"})
    first = start_agent(vm_drivers(), config)
    vm_build(first)
    to_medium(first)
    first.drivers.hypervisor.undefine(VM)  # the host lost the domain

    assert first.service.reconciler.run().ok
    assert sized(first) == (4, 2048, ["4", "5", "6", "7"])
    assert domain(first).state == DomainState.RUNNING

    drivers = first.drivers
    second = start_agent(DriverSet(drivers.functions, drivers.switch, drivers.storage, drivers.bmc,
                                   hypervisor=drivers.hypervisor), config)
    instance = second.get(f"/v1/instances/{VM}").json()
    assert (instance["vcpus"], instance["ram"]) == (4, 2048)
    assert to_medium(second).json()["steps"] == []


def test_a_paused_vm_is_not_resized(vm_agent):
    vm_build(vm_agent)
    vm_agent.post(f"/v1/instances/{VM}/pause")

    paused = to_medium(vm_agent)

    assert paused.status_code == 409, paused.text
    assert "PAUSED: unpause it to resize it" in paused.json()["error"]["message"]
    assert sized(vm_agent)[:2] == (2, 512) and domain(vm_agent).state == DomainState.PAUSED
    assert macs(vm_agent) == {"port-a": MAC_A, "port-b": MAC_B}


def test_a_bare_metal_host_is_not_resized(built):
    host = built.post("/v1/instances/inst-1/resize", {"flavor": MEDIUM})

    assert host.status_code == 409, host.text
    assert "runs on the host, whose size is its own: it cannot be resized" in host.json()["error"]["message"]
    assert built.get("/v1/instances/inst-1").json()["vcpus"] == 4
