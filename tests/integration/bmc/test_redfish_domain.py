"""The agent's Redfish BMC driver against sushy-tools on a lab host's own libvirtd: Reset and PowerState act on
the real domain, whose guest (the host image) boots, powers off on the ACPI power button, and reboots.

One host is shared by the module (boots are slow under TCG on two cores); the tests run in file order, each
leaving it as the next expects. What the guest does is read from the step lines on its console.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dpustack.drivers.bmc.redfish import RedfishBmcDriver
from dpustack.errors import DriverError
from dpustack.lab import bmcs, guest_agent
from dpustack.lab.bmcs import EmulatedBmc
from host_domain import HostDomain, host_domain
from serial_login import ConsoleReader

BOOT_TIMEOUT = 120.0
HOSTNAME, ADMIN_PASS = "redfish-host", "Redfish-Lab-2b9c"
METADATA = {"uuid": "9d1f6c0e-2b7a-4c55-8e3f-5a0b6c7d8e9f", "name": HOSTNAME, "admin_pass": ADMIN_PASS}


@pytest.fixture(scope="module")
def host(host_image, libvirt_cache) -> Iterator[HostDomain]:
    with host_domain(host_image.path, METADATA, cache=libvirt_cache) as made:
        yield made


@pytest.fixture(scope="module")
def emulator(host: HostDomain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedBmc]:
    bmc = bmcs.start_redfish(tmp_path_factory.mktemp("redfish-domain"), libvirt_uri=host.daemon.uri)
    try:
        yield bmc
    finally:
        bmc.stop()
        assert not bmc.alive, f"sushy-emulator (pid {bmc.pid}) outlived its tests"


@pytest.fixture(scope="module")
def bmc(emulator: EmulatedBmc) -> RedfishBmcDriver:
    # no system_id: the daemon has the host's domain only, the first (and only) System
    return RedfishBmcDriver(emulator.access(), timeout=BOOT_TIMEOUT, poll_interval=0.1)


def test_power_on_starts_the_domain_and_its_guest_boots(host, bmc, timings):
    assert bmc.power_state() == "off" and host.machine.state() == "off"

    started = time.monotonic()
    bmc.power_on()
    timings["Redfish On: call returns"] = time.monotonic() - started

    assert host.machine.state() == "on" and host.qemu_pid() is not None
    host.wait_for_step("ready", count=1, timeout=BOOT_TIMEOUT)
    timings["Redfish On -> guest ready"] = time.monotonic() - started
    assert bmc.power_state() == "on"
    assert host.steps()[:2] == ["boot", "dhcp"] and "failed" not in host.steps()


def test_hw_info_reports_the_domains_vcpus_and_memory(host, bmc):
    info = bmc.hw_info()
    machine = host.machine.info()

    assert (info.cpu, info.mem) == (machine.vcpus, machine.memory_mib) == (1, 1024)
    assert info.serial_number and info.model  # sushy-tools' own chassis: the domain has neither


def test_the_drivers_serial_console_is_the_systems_serial_port_where_root_logs_in(host, emulator, timings):
    # the System's UUID names the domain on the libvirtd behind the BMC
    bmc = RedfishBmcDriver(emulator.access(), console_libvirt_uri=host.daemon.uri, timeout=BOOT_TIMEOUT)
    console = ConsoleReader(bmc.serial_console())
    try:
        timings["Redfish/libvirt console: attach -> login prompt"] = console.login(HOSTNAME, ADMIN_PASS)
    finally:
        console.detach()


def test_a_redfish_bmc_without_a_console_uri_says_redfish_carries_no_serial_stream(bmc):
    with pytest.raises(DriverError, match=r"no serial stream; set \[bmc.redfish\] console_libvirt_uri"):
        bmc.serial_console()


def test_a_hard_reboot_starts_a_new_qemu_and_the_guest_boots_again(host, bmc, timings):
    qemu, readies = host.qemu_pid(), host.steps().count("ready")

    started = time.monotonic()
    bmc.reboot("hard")  # ForceRestart: sushy-tools destroys the domain and starts it

    assert bmc.power_state() == "on"
    host.wait_for_step("ready", count=readies + 1, timeout=BOOT_TIMEOUT)
    timings["Redfish ForceRestart -> guest ready"] = time.monotonic() - started
    assert host.qemu_pid() not in (None, qemu)
    assert host.steps().count("poweroff") == 0  # not asked: the power was cut


def test_a_soft_reboot_is_the_guest_powering_off_on_the_button_and_starting_again(host, bmc, timings):
    qemu, readies = host.qemu_pid(), host.steps().count("ready")

    started = time.monotonic()
    bmc.reboot("soft")  # GracefulRestart: libvirt presses the power button, and restarts the guest once it is off
    host.wait_for_step("ready", count=readies + 1, timeout=BOOT_TIMEOUT)
    timings["Redfish GracefulRestart -> guest ready"] = time.monotonic() - started

    steps = host.steps()
    last_boot = len(steps) - 1 - steps[::-1].index("boot")
    assert steps[last_boot - 2:last_boot] == ["poweroff", "shutdown"]  # the guest went down on its own
    assert host.qemu_pid() == qemu and bmc.power_state() == "on"  # the same QEMU, reset


def test_a_reboot_inside_the_guest_is_its_own_business(host, bmc):
    readies, shutdowns = host.steps().count("ready"), host.steps().count("shutdown")

    status, _ = guest_agent.run(host.agent_socket, "(sleep 1; reboot) > /dev/null 2>&1 &", 20)

    assert status == 0
    host.wait_for_step("ready", count=readies + 1, timeout=BOOT_TIMEOUT)
    assert host.steps().count("shutdown") == shutdowns + 1 and bmc.power_state() == "on"


def test_a_soft_power_off_waits_for_the_guest_to_power_off(host, bmc, timings):
    qemu, poweroffs = host.qemu_pid(), host.steps().count("poweroff")

    started = time.monotonic()
    bmc.power_off(soft=True)  # GracefulShutdown: the ACPI power button; returns once the System is Off
    timings["Redfish GracefulShutdown -> Off"] = time.monotonic() - started

    assert host.steps().count("poweroff") == poweroffs + 1
    assert host.machine.state() == "off"
    host.wait_qemu_gone(qemu)


def test_force_off_ends_qemu(host, bmc, timings):
    readies = host.steps().count("ready")
    bmc.power_on()
    host.wait_for_step("ready", count=readies + 1, timeout=BOOT_TIMEOUT)
    qemu, poweroffs = host.qemu_pid(), host.steps().count("poweroff")

    started = time.monotonic()
    bmc.power_off()  # ForceOff
    timings["Redfish ForceOff: call returns"] = time.monotonic() - started
    host.wait_qemu_gone(qemu)
    timings["Redfish ForceOff -> QEMU gone"] = time.monotonic() - started

    assert host.machine.state() == "off" and bmc.power_state() == "off" and host.qemu_pid() is None
    assert host.steps().count("poweroff") == poweroffs  # the guest was not asked


def test_the_emulator_outlives_a_restart_of_the_hosts_libvirtd(host, bmc):
    host.daemon.stop()
    host.daemon.start()

    assert bmc.power_state() == "off"  # looked up anew, not on the dead daemon's connection
    assert bmc.hw_info().mem == 1024
