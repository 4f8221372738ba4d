"""The memory hypervisor's domains: the lifecycle the agent drives, by UUID, with the rules of the libvirt one."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from dpustack.drivers.hypervisor import DomainState
from dpustack.drivers.hypervisor.domain_xml import DomainSpec, LabBacking, PassedFunction, assemble, function_element
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver
from dpustack.errors import DriverError, InvalidInput

UUID = "6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5"
OTHER = "0b9a8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"
BOOT = PassedFunction("boot", "0000:41:00.0", "storage", slot=0, boot_order=1)
NIC0 = PassedFunction("nic0", "0000:42:00.0", "net", slot=1, mac="52:54:00:00:00:01")
NIC1 = PassedFunction("nic1", "0000:43:00.0", "net", slot=2, mac="52:54:00:00:00:02")
LAB = LabBacking(tap=lambda function: f"tap-{function.id}", socket=lambda function: f"/run/vol/{function.id}.sock")


def domain(uuid: str = UUID, name: str = "vm-1", memory_mib: int = 256) -> str:
    return assemble(DomainSpec(name=name, uuid=uuid, vcpus=1, memory_mib=memory_mib, functions=[BOOT, NIC0]), "lab",
                    LAB)


def nic(function: PassedFunction = NIC1) -> str:
    return ET.tostring(function_element(function, "lab", LAB), encoding="unicode")


@pytest.fixture
def driver() -> MemoryHypervisorDriver:
    made = MemoryHypervisorDriver()
    made.define(UUID, domain())
    return made


def test_a_defined_domain_is_off_with_the_devices_of_its_xml_and_listed():
    driver = MemoryHypervisorDriver()
    assert driver.state(UUID) == DomainState.MISSING and driver.domains() == []

    driver.define(UUID.upper(), domain())

    assert driver.state(UUID) == DomainState.OFF
    assert driver.domains() == [UUID]
    assert sorted(driver.held[UUID].config) == ["boot", "nic0"]  # the root ports' aliases are no devices
    assert driver.held[UUID].live == {}


def test_defining_the_same_xml_again_is_fine_and_other_xml_for_that_uuid_is_refused(driver):
    driver.start(UUID)
    driver.attach(UUID, nic(), "nic1")

    driver.define(UUID, domain())
    driver.define(UUID, ET.tostring(ET.fromstring(domain())))  # the same document, written otherwise

    assert driver.state(UUID) == DomainState.RUNNING and "nic1" in driver.held[UUID].config  # left as it was
    with pytest.raises(DriverError, match=f"domain {UUID} is defined already \\('vm-1'\\), from other XML"):
        driver.define(UUID, domain(memory_mib=512))


def test_the_xml_must_be_of_that_uuid_and_a_name_must_be_free():
    driver = MemoryHypervisorDriver()
    with pytest.raises(InvalidInput) as caught:
        driver.define(UUID, domain(uuid=OTHER))
    assert caught.value.field == "uuid"
    with pytest.raises(InvalidInput) as caught:
        driver.define("not-a-uuid", domain())
    assert caught.value.field == "uuid"
    with pytest.raises(InvalidInput) as caught:
        driver.define(UUID, "<domain><name>x</name>")
    assert caught.value.field == "xml"

    driver.define(UUID, domain())
    with pytest.raises(DriverError, match="a domain 'vm-1' exists already"):
        driver.define(OTHER, domain(uuid=OTHER))


def test_start_pause_unpause_and_their_repeats(driver):
    driver.start(UUID)
    driver.start(UUID)
    assert (driver.state(UUID), driver.held[UUID].boots) == (DomainState.RUNNING, 1)
    assert sorted(driver.held[UUID].live) == ["boot", "nic0"]

    driver.pause(UUID)
    driver.pause(UUID)
    driver.start(UUID)  # paused is on: a start leaves it paused
    assert (driver.state(UUID), driver.held[UUID].boots) == (DomainState.PAUSED, 1)
    driver.unpause(UUID)
    driver.unpause(UUID)
    assert driver.state(UUID) == DomainState.RUNNING


def test_an_off_domain_cannot_be_paused_or_unpaused_nor_soft_rebooted(driver):
    for operation in (driver.pause, driver.unpause):
        with pytest.raises(DriverError, match="is off"):
            operation(UUID)
    with pytest.raises(DriverError, match="is off: a soft reboot needs a running guest"):
        driver.reboot(UUID, soft=True)


def test_a_soft_stop_powers_off_a_guest_that_hears_it_and_times_out_on_one_that_does_not(driver):
    driver.start(UUID)
    driver.stop(UUID, soft=True)
    assert driver.state(UUID) == DomainState.OFF and driver.held[UUID].live == {}
    driver.stop(UUID, soft=True)  # off already

    driver.start(UUID)
    driver.held[UUID].deaf = True
    started = time.monotonic()
    with pytest.raises(DriverError, match="did not power off within 0.2 s"):
        driver.stop(UUID, soft=True, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    assert driver.state(UUID) == DomainState.RUNNING
    driver.stop(UUID, soft=False)
    assert driver.state(UUID) == DomainState.OFF


def test_a_paused_guest_cannot_hear_a_soft_stop_but_a_hard_one_stops_it(driver):
    driver.start(UUID)
    driver.pause(UUID)

    with pytest.raises(DriverError, match="is paused and cannot hear the power button"):
        driver.stop(UUID, soft=True)
    driver.stop(UUID, soft=False)
    assert driver.state(UUID) == DomainState.OFF


def test_reboots_boot_the_guest_again_and_a_hard_one_starts_an_off_or_paused_domain(driver):
    driver.reboot(UUID, soft=False)
    assert (driver.state(UUID), driver.held[UUID].boots) == (DomainState.RUNNING, 1)
    driver.reboot(UUID, soft=True)
    assert driver.held[UUID].boots == 2
    driver.pause(UUID)
    with pytest.raises(DriverError, match="is paused"):
        driver.reboot(UUID, soft=True)
    driver.reboot(UUID, soft=False)
    assert (driver.state(UUID), driver.held[UUID].boots) == (DomainState.RUNNING, 3)


def test_attach_goes_to_the_guest_and_the_definition_when_running_and_to_the_definition_when_off(driver):
    driver.attach(UUID, nic(), "nic1")
    assert "nic1" in driver.held[UUID].config and driver.held[UUID].live == {}
    driver.start(UUID)
    assert "nic1" in driver.held[UUID].live  # the next boot has it

    driver.detach(UUID, "nic1")
    assert "nic1" not in driver.held[UUID].live and "nic1" not in driver.held[UUID].config
    driver.attach(UUID, nic(), "nic1")
    assert "nic1" in driver.held[UUID].live and "nic1" in driver.held[UUID].config
    driver.attach(UUID, nic(), "nic1")  # the same device again: nothing to do


def test_attach_refuses_another_device_under_a_known_alias_a_taken_address_or_a_foreign_alias(driver):
    other_nic = PassedFunction("nic1", "0000:43:00.0", "net", slot=2, mac="52:54:00:00:00:99")
    driver.attach(UUID, nic(), "nic1")

    with pytest.raises(DriverError, match="has another device 'nic1' already"):
        driver.attach(UUID, nic(other_nic), "nic1")
    in_boot_slot = PassedFunction("nic2", "0000:44:00.0", "net", slot=0, mac="52:54:00:00:00:03")
    with pytest.raises(DriverError, match="'boot' is at its guest address"):
        driver.attach(UUID, nic(in_boot_slot), "nic2")
    with pytest.raises(InvalidInput, match="its alias is 'ua-nic1', not 'ua-nic3'"):
        driver.attach(UUID, nic(), "nic3")
    with pytest.raises(DriverError, match="device id"):
        driver.attach(UUID, "<interface type='ethernet'/>", "not an id")


def test_a_device_without_an_alias_gets_the_one_named(driver):
    driver.attach(UUID, "<interface type='ethernet'><mac address='52:54:00:00:00:07'/></interface>", "nic7")

    assert driver.held[UUID].config["nic7"].find("alias").get("name") == "ua-nic7"


def test_detach_of_a_device_a_deaf_guest_keeps_fails_after_the_timeout_and_it_is_gone_from_the_definition(driver):
    driver.start(UUID)
    driver.attach(UUID, nic(), "nic1")
    driver.held[UUID].deaf = True

    with pytest.raises(DriverError, match="still present 0.1 s after its unplug"):
        driver.detach(UUID, "nic1", timeout=0.1)
    assert "nic1" in driver.held[UUID].live and "nic1" not in driver.held[UUID].config
    driver.detach(UUID, "nothing")  # a device it does not have: nothing to do


def test_undefine_forgets_a_running_domain_and_then_has_nothing_to_do(driver):
    driver.start(UUID)
    driver.undefine(UUID)
    driver.undefine(UUID)

    assert driver.state(UUID) == DomainState.MISSING and driver.domains() == []


def test_operations_on_a_missing_domain_fail_naming_its_uuid():
    driver = MemoryHypervisorDriver()
    for operation in (driver.start, driver.stop, driver.reboot, driver.pause, driver.unpause, driver.serial_console):
        with pytest.raises(DriverError, match=f"no domain {UUID}"):
            operation(UUID)
    with pytest.raises(DriverError, match=f"no domain {UUID}"):
        driver.attach(UUID, nic(), "nic1")
    with pytest.raises(DriverError, match=f"no domain {UUID}"):
        driver.detach(UUID, "nic1")


def test_each_domain_has_its_own_serial_console(driver):
    driver.define(OTHER, domain(uuid=OTHER, name="vm-2"))
    seen: dict[str, bytearray] = {UUID: bytearray(), OTHER: bytearray()}
    for uuid in seen:
        driver.serial_console(uuid).attach(seen[uuid].extend)

    driver.held[UUID].console.emit(b"login: ")
    driver.serial_console(OTHER).write(b"root\r")

    assert seen == {UUID: bytearray(b"login: "), OTHER: bytearray(b"root\r")}


def test_faults_fire_before_or_after_the_operation_took_effect(driver):
    driver.faults.arm("start", message="libvirtd went away")
    with pytest.raises(DriverError, match="libvirtd went away"):
        driver.start(UUID)
    assert driver.state(UUID) == DomainState.OFF

    driver.faults.arm("start", after=True)
    with pytest.raises(DriverError, match="hypervisor.start: injected fault"):
        driver.start(UUID)
    assert driver.state(UUID) == DomainState.RUNNING  # it half-happened

    for operation in ("attach", "detach", "undefine", "define", "domains", "state"):
        driver.faults.arm(operation)
    with pytest.raises(DriverError):
        driver.attach(UUID, nic(), "nic1")
    with pytest.raises(DriverError):
        driver.detach(UUID, "nic0")
    with pytest.raises(DriverError):
        driver.undefine(UUID)
    with pytest.raises(DriverError):
        driver.define(UUID, domain())
    with pytest.raises(DriverError):
        driver.domains()
    with pytest.raises(DriverError):
        driver.state(UUID)
    assert driver.domains() == [UUID] and "nic0" in driver.held[UUID].live and driver.faults.armed == 0
    assert driver.faults.calls[-7:] == ["attach", "detach", "undefine", "define", "domains", "state", "domains"]


# -- a password through the pretend guest agent ---------------------------------------------------------------
def test_a_password_is_set_in_a_running_guest_through_its_agent_and_kept_by_user(driver):
    driver.start(UUID)

    driver.set_password(UUID.upper(), "root", "s3cret:pass")
    driver.set_password(UUID, "root", "s3cret:newer")

    assert driver.held[UUID].passwords == {"root": "s3cret:newer"}


@pytest.mark.parametrize("prepare, message", [
    (lambda d: None, f"domain {UUID} is off: setting a password needs a running guest"),
    (lambda d: (d.start(UUID), d.pause(UUID)), f"domain {UUID} is paused: setting a password needs a running guest"),
    (lambda d: (d.start(UUID), setattr(d.held[UUID], "agent_answers", False)),
     "through its guest agent: Guest agent is not responding: QEMU guest agent is not connected"),
])
def test_a_password_needs_a_running_guest_whose_agent_answers(driver, prepare, message):
    prepare(driver)
    with pytest.raises(DriverError) as caught:
        driver.set_password(UUID, "root", "s3cret:pass")
    assert message in caught.value.message and "s3cret" not in caught.value.message
    assert driver.held[UUID].passwords == {}


def test_a_password_of_a_user_the_guest_lacks_or_of_a_missing_domain_is_refused(driver):
    driver.start(UUID)
    with pytest.raises(DriverError, match="'nobody' in domain .* child process has failed to set user password"):
        driver.set_password(UUID, "nobody", "s3cret:pass")
    with pytest.raises(DriverError, match=f"the pretend host has no domain {OTHER}"):
        driver.set_password(OTHER, "root", "s3cret:pass")
    assert driver.held[UUID].passwords == {}
