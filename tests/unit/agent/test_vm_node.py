"""A vm node's agent: each instance a domain of the (pretend) host's hypervisor, its DPU functions passed
through by their BDFs, hot-plugged while it runs, and nothing left behind by a failure."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

import pytest

from .conftest import MAC_C, memory_drivers, vm_drivers
from dpustack.agent.hardware import DriverSet
from dpustack.drivers.hypervisor import DomainState

VM = "0b7e3c1a-5d2f-4e8a-9c61-7f0a2b4d6e11"
PLACEMENT = {"cells": [{"guest_cell": 0, "host_cell": 1, "vcpus": [0, 1], "host_cpus": [5, 6], "memory_mib": 512}],
             "pinned": True, "page_size_kib": None}


def vm_build(agent, **overrides):
    body = {"uuid": VM, "flavor": {"name": "vm.small", "vcpus": 2, "ram": 512, "disk": 1},
            "numa_placement": PLACEMENT, **overrides}
    return agent.build(**body)


def domain(agent):
    return agent.drivers.hypervisor.held[VM]


def hostdevs(agent, view="config"):
    """alias -> (host BDF, guest bus) of the domain's hostdevs."""
    found = {}
    for alias, element in getattr(domain(agent), view).items():
        if element.tag == "hostdev":
            source = element.find("source/address").attrib
            bdf = f"{int(source['domain'], 16):04x}:{int(source['bus'], 16):02x}:{int(source['slot'], 16):02x}." \
                  f"{int(source['function'], 16)}"
            found[alias] = (bdf, int(element.find("address").get("bus"), 16))
    return found


def test_a_vm_is_a_running_domain_with_its_functions_passed_through_by_their_bdfs(vm_agent):
    response = vm_build(vm_agent)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["instance"]["status"] == "ACTIVE"
    assert "define VM" in [step["name"] for step in body["steps"]]
    assert domain(vm_agent).state == DomainState.RUNNING
    bdfs = {f["function_id"]: f["bdf"] for f in body["instance"]["volumes"] + body["instance"]["nics"]}
    # the boot volume in guest slot 0 (bus 1), then the NICs in order
    assert hostdevs(vm_agent) == {"storage-vol-boot": (bdfs["storage-vol-boot"], 1),
                                  "net-port-a": (bdfs["net-port-a"], 2), "net-port-b": (bdfs["net-port-b"], 3)}
    xml = ET.fromstring(domain(vm_agent).xml)
    assert [pin.get("cpuset") for pin in xml.iterfind("cputune/vcpupin")] == ["5", "6"]
    assert xml.find("numatune/memory").get("nodeset") == "1"
    assert xml.find("name").text == f"dpustack-{VM}"


def test_a_nic_added_to_a_running_vm_is_hot_plugged_into_the_lowest_free_slot_and_removed_again(vm_agent):
    vm_build(vm_agent)

    added = vm_agent.post(f"/v1/instances/{VM}/nics", {"port_id": "port-c", "mac": MAC_C})

    assert added.status_code == 200, added.text
    bdf = next(n["bdf"] for n in added.json()["instance"]["nics"] if n["port_id"] == "port-c")
    assert hostdevs(vm_agent, "live")["net-port-c"] == (bdf, 4)
    assert vm_agent.post(f"/v1/instances/{VM}/nics", {"port_id": "port-c", "mac": MAC_C}).json()["steps"] == []

    removed = vm_agent.delete(f"/v1/instances/{VM}/nics/port-a")

    assert removed.status_code == 200, removed.text
    names = [step["name"] for step in removed.json()["steps"]]
    assert names[0] == "unplug net-port-a from VM"  # the guest lets go before the function goes
    assert "net-port-a" not in domain(vm_agent).live and "net-port-a" not in domain(vm_agent).config
    again = vm_agent.post(f"/v1/instances/{VM}/volumes", {"volume_id": "vol-data", "uri": "nbd://10.0.0.5/d"})
    assert hostdevs(vm_agent, "live")["storage-vol-data"][1] == 2  # port-a's slot, free again
    assert again.status_code == 200


def test_a_vm_that_cannot_be_defined_leaves_nothing_behind(vm_agent):
    vm_agent.drivers.hypervisor.faults.arm("define")

    response = vm_build(vm_agent)

    assert response.status_code == 502
    assert {s["name"]: s["status"] for s in response.json()["steps"]}["define VM"] == "failed"
    assert vm_agent.drivers.hypervisor.held == {}
    assert vm_agent.hardware()["functions"] == [] and vm_agent.hardware()["ports"] == []
    assert vm_agent.hardware()["attachments"] == []


def test_a_vm_that_cannot_start_is_undefined_again(vm_agent):
    vm_agent.drivers.hypervisor.faults.arm("start")

    response = vm_build(vm_agent)

    assert response.status_code == 502
    assert vm_agent.drivers.hypervisor.held == {} and vm_agent.hardware()["functions"] == []


def test_a_nic_the_vm_cannot_take_is_unplugged_and_deleted_again(vm_agent):
    vm_build(vm_agent)
    before = vm_agent.snapshot()
    vm_agent.drivers.hypervisor.faults.arm("attach")

    response = vm_agent.post(f"/v1/instances/{VM}/nics", {"port_id": "port-c", "mac": MAC_C})

    assert response.status_code == 502
    assert vm_agent.snapshot() == before


def test_stop_start_and_delete_of_a_vm(vm_agent):
    vm_build(vm_agent)

    assert vm_agent.post(f"/v1/instances/{VM}/stop").json()["instance"]["status"] == "SHUTOFF"
    assert domain(vm_agent).state == DomainState.OFF
    assert len(vm_agent.hardware()["functions"]) == 3  # the functions stay on the DPU while the VM is off
    assert vm_agent.post(f"/v1/instances/{VM}/start").json()["instance"]["status"] == "ACTIVE"
    assert domain(vm_agent).boots == 2

    deleted = vm_agent.delete(f"/v1/instances/{VM}")

    assert deleted.status_code == 200, deleted.text
    assert vm_agent.drivers.hypervisor.held == {}
    assert vm_agent.hardware()["functions"] == [] and vm_agent.hardware()["ports"] == []


def test_a_bm_node_has_no_hypervisor_and_a_vm_node_needs_one(config_for):
    with pytest.raises(Exception) as caught:
        config_for(node_type="vm")
    assert getattr(caught.value, "field", None) == "drivers.hypervisor"
    with pytest.raises(Exception) as caught:
        config_for(drivers={"hypervisor": "memory"})
    assert getattr(caught.value, "field", None) == "drivers.hypervisor"


def test_two_vms_share_the_node(vm_agent):
    other = "1c9a7e2b-0d3f-4b6a-8e15-3a5c7d9f0b22"
    assert vm_build(vm_agent).status_code == 200
    second = vm_agent.build(uuid=other, name="web-2", flavor={"name": "vm.small", "vcpus": 1, "ram": 256, "disk": 1},
                            networks=[{"port_id": "port-z", "mac": "aa:bb:cc:00:00:7a"}],
                            volumes=[{"volume_id": "vol-2", "uri": "nbd://10.0.0.5/v2", "bootable": True}])
    assert second.status_code == 200, second.text
    assert sorted(vm_agent.drivers.hypervisor.held) == sorted([VM, other])


def test_a_domain_the_host_lost_is_defined_again_and_started_by_the_next_pass(vm_agent):
    vm_build(vm_agent)
    xml = domain(vm_agent).xml
    vm_agent.drivers.hypervisor.undefine(VM)

    result = vm_agent.service.reconciler.run()

    assert result.ok, result.errors
    assert f"defined VM {VM} again and started it" in result.repaired
    assert domain(vm_agent).xml == xml and domain(vm_agent).state == DomainState.RUNNING


def test_a_lost_domain_is_defined_again_with_every_function_in_the_guest_slot_it_had(vm_agent):
    vm_build(vm_agent)
    vm_agent.delete(f"/v1/instances/{VM}/nics/port-a")  # frees slot 1 (bus 2)...
    vm_agent.post(f"/v1/instances/{VM}/nics", {"port_id": "port-c", "mac": MAC_C})  # ...which port-c takes
    vm_agent.post(f"/v1/instances/{VM}/volumes", {"volume_id": "vol-data", "uri": "nbd://10.0.0.5/d"})
    before = hostdevs(vm_agent)
    assert before["net-port-c"][1] == 2 and before["storage-vol-data"][1] == 4
    vm_agent.drivers.hypervisor.undefine(VM)

    result = vm_agent.service.reconciler.run()

    assert result.ok, result.errors
    assert hostdevs(vm_agent) == before  # the guest sees each device at the address it had
    # the slots come from the agent's records (the host has nothing left): they stay right for the next loss
    vm_agent.drivers.hypervisor.undefine(VM)
    assert vm_agent.service.reconciler.run().ok and hostdevs(vm_agent) == before


def test_after_a_soc_reboot_the_vms_nics_are_plugged_into_it_again(start_agent, config_for):
    config = config_for(node_type="vm", drivers={"hypervisor": "memory"})
    first = start_agent(vm_drivers(), config)
    vm_build(first)
    hypervisor = first.drivers.hypervisor
    hypervisor.faults.clear()

    # the SoC reboots: functions, ports and attachments are gone; the host and its VM are not
    drivers = memory_drivers(bmc=first.drivers.bmc)
    second = start_agent(DriverSet(drivers.functions, drivers.switch, drivers.storage, drivers.bmc,
                                   hypervisor=hypervisor), config)

    assert second.get(f"/v1/instances/{VM}").json()["status"] == "ACTIVE"
    calls = [call for call in hypervisor.faults.calls if call in ("detach", "attach")]
    assert calls == ["detach", "attach", "detach", "attach"]  # each NIC, its tap new; the disk reconnects
    assert set(hostdevs(second, "live")) == {"storage-vol-boot", "net-port-a", "net-port-b"}


def test_the_pci_devices_the_controller_allocated_are_passed_through_after_the_functions(vm_agent):
    response = vm_build(vm_agent, pci_devices=[{"address": "0000:81:00.2", "request_id": "gpu"}])

    assert response.status_code == 200, response.text
    assert hostdevs(vm_agent)["pci0"] == ("0000:81:00.2", 4)  # slots 0-2 hold the volume and the two NICs


# -- a password, set in the running VM through its guest agent --------------------------------------------------
SECRET = "n3w:Pass phrase!"


def test_a_password_is_set_in_the_running_vm_through_its_guest_agent_and_logged_nowhere(vm_agent, caplog):
    caplog.set_level(logging.DEBUG)
    vm_build(vm_agent)

    answer = vm_agent.post(f"/v1/instances/{VM}/password", {"user": "root", "password": SECRET})

    assert answer.status_code == 200, answer.text
    assert [(step["name"], step["status"]) for step in answer.json()["steps"]] == [("set password of root in VM",
                                                                                   "done")]
    assert answer.json()["instance"]["status"] == "ACTIVE"
    assert domain(vm_agent).passwords == {"root": SECRET}
    assert SECRET not in answer.text and SECRET not in json.dumps(vm_agent.records())
    assert any("password of user root set in instance" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_a_guest_agent_that_does_not_answer_fails_the_call_with_libvirts_reason(vm_agent):
    vm_build(vm_agent)
    domain(vm_agent).agent_answers = False

    answer = vm_agent.post(f"/v1/instances/{VM}/password", {"user": "root", "password": SECRET})

    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert "Guest agent is not responding: QEMU guest agent is not connected" in error["message"]
    assert [(step["name"], step["status"]) for step in answer.json()["steps"]] == [
        ("set password of root in VM", "failed")]
    assert SECRET not in answer.text and domain(vm_agent).passwords == {}
    assert vm_agent.get(f"/v1/instances/{VM}").json()["status"] == "ACTIVE"  # the VM runs on, unharmed


def test_a_stopped_vm_or_a_bad_body_is_refused_before_the_guest_is_asked(vm_agent):
    vm_build(vm_agent)
    assert vm_agent.post(f"/v1/instances/{VM}/stop").status_code == 200

    stopped = vm_agent.post(f"/v1/instances/{VM}/password", {"user": "root", "password": SECRET})
    assert stopped.status_code == 409 and stopped.json()["error"]["field"] == "uuid", stopped.text
    assert "is SHUTOFF: start it to set a password in it" in stopped.json()["error"]["message"]
    for body, field in (({"user": "root", "password": ""}, "password"), ({"user": "a b", "password": SECRET}, "user"),
                        ({"password": SECRET}, "user"), ({"user": "root", "password": SECRET, "x": 1}, "x")):
        refused = vm_agent.post(f"/v1/instances/{VM}/password", body)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, (body, refused.text)
        assert SECRET not in refused.text
    assert domain(vm_agent).passwords == {}


def test_on_bare_metal_the_host_takes_its_password_from_the_metadata_service(built):
    answer = built.post("/v1/instances/inst-1/password", {"user": "root", "password": SECRET})
    assert answer.status_code == 409, answer.text
    assert "runs on the host: its password is taken from the metadata service at its next boot" in \
        answer.json()["error"]["message"]


def test_a_vm_built_with_power_off_is_defined_and_stays_off_until_started(vm_agent):
    # a cold migration of a stopped VM builds it on its new node this way
    response = vm_build(vm_agent, power="off")

    assert response.status_code == 200, response.text
    assert (response.json()["instance"]["status"], response.json()["instance"]["power_state"]) == ("SHUTOFF", "off")
    assert domain(vm_agent).state != DomainState.RUNNING
    assert vm_agent.post(f"/v1/instances/{VM}/start").json()["instance"]["status"] == "ACTIVE"
    assert domain(vm_agent).state == DomainState.RUNNING
