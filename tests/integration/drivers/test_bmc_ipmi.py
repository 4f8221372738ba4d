"""The IPMI BMC driver (ipmitool) against dpustack's pyghmi BMC emulator."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest

from bmc import (IPMI_MANUFACTURER, IPMI_PRODUCT, IPMI_SERIAL, LATE_SECONDS, agent_app, ipmi_bmc,  # noqa: F401
                 late_ipmi_bmc, log_lines)
from dpustack.drivers.bmc import BmcAccess, Console, HardwareInfo
from dpustack.drivers.bmc.ipmi import IpmiBmcDriver
from dpustack.errors import DriverError
from dpustack.lab.bmcs import EmulatedBmc

HOST_CPU, HOST_MEM = 96, 393216  # [bmc.host]: IPMI does not report them


def driver_for(emulator: EmulatedBmc, **options) -> IpmiBmcDriver:
    options = {"port": emulator.port, "cpu": HOST_CPU, "mem": HOST_MEM, "timeout": 10, "poll_interval": 0.1,
               **options}
    return IpmiBmcDriver(emulator.access(), **options)


@pytest.fixture
def bmc(ipmi_bmc: EmulatedBmc) -> IpmiBmcDriver:
    return driver_for(ipmi_bmc)


@pytest.fixture
def running_host(bmc: IpmiBmcDriver) -> IpmiBmcDriver:
    bmc.power_on()
    return bmc


@pytest.fixture
def stopped_host(bmc: IpmiBmcDriver) -> IpmiBmcDriver:
    bmc.power_off()
    return bmc


def new_log_lines(emulator: EmulatedBmc, before: int) -> list[str]:
    return [line.split(" ", 2)[-1] for line in log_lines(emulator)[before:]]


def test_the_driver_validates_its_settings(bmc, ipmi_bmc):
    bmc.validate()

    with pytest.raises(DriverError, match=r"set \[bmc.host\] cpu and mem"):
        IpmiBmcDriver(ipmi_bmc.access(), port=ipmi_bmc.port).validate()
    with pytest.raises(DriverError, match="host name or IP address"):
        IpmiBmcDriver(BmcAccess("https://10.1.0.7", "admin", "pw"), cpu=1, mem=1).validate()
    with pytest.raises(DriverError, match="at most 20 bytes"):
        IpmiBmcDriver(BmcAccess("10.1.0.7", "admin", "x" * 21), cpu=1, mem=1).validate()


def test_power_on_starts_a_stopped_host_and_is_idempotent(stopped_host, ipmi_bmc):
    stopped_host.power_on()
    assert stopped_host.power_state() == "on"

    before = len(log_lines(ipmi_bmc))
    stopped_host.power_on()  # already on: no chassis control sent
    assert stopped_host.power_state() == "on"
    assert new_log_lines(ipmi_bmc, before) == []


def test_power_off_stops_a_running_host(running_host):
    running_host.power_off()

    assert running_host.power_state() == "off"


def test_a_soft_power_off_asks_for_an_acpi_shutdown(running_host, ipmi_bmc):
    before = len(log_lines(ipmi_bmc))

    running_host.power_off(soft=True)

    assert running_host.power_state() == "off"
    assert new_log_lines(ipmi_bmc, before) == ["soft power off (ACPI shutdown)", "host power is off"]


def test_a_hard_reboot_resets_a_running_host(running_host, ipmi_bmc):
    before = len(log_lines(ipmi_bmc))

    running_host.reboot("hard")

    assert running_host.power_state() == "on"
    assert new_log_lines(ipmi_bmc, before) == ["power reset: the host restarts"]


def test_a_hard_reboot_can_be_a_power_cycle_for_bmcs_that_want_one(ipmi_bmc):
    bmc = driver_for(ipmi_bmc, hard_reboot="cycle")
    bmc.power_on()
    before = len(log_lines(ipmi_bmc))

    bmc.reboot("hard")

    assert new_log_lines(ipmi_bmc, before) == ["power cycle: the host restarts"]


def test_a_hard_reboot_starts_a_stopped_host(stopped_host):
    stopped_host.reboot("hard")  # "reset" would be refused by the BMC while the host is off

    assert stopped_host.power_state() == "on"


def test_a_soft_reboot_shuts_the_os_down_then_powers_on(running_host, ipmi_bmc):
    before = len(log_lines(ipmi_bmc))

    running_host.reboot("soft")

    assert running_host.power_state() == "on"
    assert new_log_lines(ipmi_bmc, before) == ["soft power off (ACPI shutdown)", "host power is off",
                                               "power on", "host power is on"]


def test_a_soft_reboot_of_a_stopped_host_is_refused_and_leaves_it_off(stopped_host):
    with pytest.raises(DriverError, match="soft reboot needs a running host, and it is off"):
        stopped_host.reboot("soft")

    assert stopped_host.power_state() == "off"


def test_the_bmc_refusing_a_reset_of_a_stopped_host_is_a_readable_error(stopped_host, ipmi_bmc):
    with pytest.raises(DriverError) as caught:
        stopped_host._act("reset")  # what a naive driver would send

    assert caught.value.message == (f"bmc.reset: the BMC at 127.0.0.1:{ipmi_bmc.port} refuses this in the "
                                    f"host's present power state")


def test_hw_info_takes_serial_and_model_from_the_fru_and_the_size_from_config(bmc):
    assert bmc.hw_info() == HardwareInfo(serial_number=IPMI_SERIAL, cpu=HOST_CPU, mem=HOST_MEM,
                                         model=f"{IPMI_MANUFACTURER} {IPMI_PRODUCT}")


def test_the_console_is_serial_over_lan_on_the_bmc(bmc, ipmi_bmc):
    assert bmc.console() == Console(type="ipmi-sol", url=f"ipmi://127.0.0.1:{ipmi_bmc.port}")


def test_a_bmc_that_applies_power_late_is_waited_for(late_ipmi_bmc):
    bmc = driver_for(late_ipmi_bmc)
    bmc.power_off()

    started = time.monotonic()
    bmc.power_on()

    assert time.monotonic() - started >= LATE_SECONDS * 0.9
    assert bmc.power_state() == "on"


def test_a_bmc_slower_than_the_timeout_is_a_readable_error(late_ipmi_bmc):
    driver_for(late_ipmi_bmc).power_on()
    impatient = driver_for(late_ipmi_bmc, timeout=0.3)

    with pytest.raises(DriverError) as caught:
        impatient.power_off()

    assert caught.value.message.startswith("bmc.power_off: the host is still on after 0.3 s, not off")
    time.sleep(LATE_SECONDS)  # let the late change land before the next test


def test_the_password_reaches_ipmitool_by_environment_never_by_command_line(bmc, ipmi_bmc, monkeypatch):
    seen: list[tuple[list[str], str | None]] = []
    real_run = subprocess.run

    def spying_run(argv, **kwargs):
        seen.append((list(argv), kwargs["env"].get("IPMI_PASSWORD")))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", spying_run)
    bmc.power_state()

    argv, env_password = seen[-1]
    assert env_password == ipmi_bmc.password
    assert "-E" in argv and ipmi_bmc.password not in " ".join(argv)


def test_a_wrong_password_is_a_readable_error_that_never_shows_the_password(ipmi_bmc, caplog):
    password = "Wr0ng-Secret-7731"
    bmc = IpmiBmcDriver(BmcAccess("127.0.0.1", ipmi_bmc.username, password), port=ipmi_bmc.port,
                        cpu=HOST_CPU, mem=HOST_MEM)

    with caplog.at_level(logging.DEBUG), pytest.raises(DriverError) as caught:
        bmc.power_on()

    message = caught.value.message
    assert message == (f"bmc.power_on: the BMC at 127.0.0.1:{ipmi_bmc.port} refused the password of user "
                       f"'{ipmi_bmc.username}'; check [bmc] username and password")
    for text in (message, caplog.text, repr(bmc), repr(caught.value)):
        assert password not in text
    assert "running ipmitool" in caplog.text  # the command was logged, without the password


def test_an_agent_with_an_ipmi_bmc_reports_the_configured_size_and_the_fru_serial(ipmi_bmc, tmp_path):
    bmc_config = {"address": "127.0.0.1", "username": ipmi_bmc.username, "password": ipmi_bmc.password,
                  "ipmi": {"port": ipmi_bmc.port, "timeout": 10}, "host": {"cpu": HOST_CPU, "mem": HOST_MEM}}

    with agent_app(tmp_path / "state", {"bmc": "ipmi"}, bmc_config) as agent:
        status = agent.get("/v1/status").json()
        assert (status["ready"], status["total_cpu"], status["total_mem"]) == (True, HOST_CPU, HOST_MEM)
        assert agent.get("/v1/bmc/hw_info").json()["serial_number"] == IPMI_SERIAL
        assert agent.get("/v1/bmc/console").json() == {"type": "ipmi-sol", "url": f"ipmi://127.0.0.1:{ipmi_bmc.port}"}
        assert agent.post("/v1/bmc/power_on").json() == {"power_state": "on"}
