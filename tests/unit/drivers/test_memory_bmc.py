"""The memory BMC: a host described by config whose power state may survive the agent."""

import pytest

from dpustack.drivers.bmc import BmcAccess, Console, HardwareInfo
from dpustack.drivers.bmc.memory import MemoryBmcDriver
from dpustack.errors import DriverError


def test_power_on_and_off_are_idempotent():
    bmc = MemoryBmcDriver()
    assert bmc.power_state() == "off"

    bmc.power_on()
    bmc.power_on()
    assert bmc.power_state() == "on"

    bmc.power_off()
    bmc.power_off()
    assert bmc.power_state() == "off"


def test_a_hard_reboot_starts_a_stopped_host_but_a_soft_one_needs_it_running():
    bmc = MemoryBmcDriver()

    with pytest.raises(DriverError, match="soft reboot needs a running host"):
        bmc.reboot("soft")
    bmc.reboot("hard")
    assert bmc.power_state() == "on"
    bmc.reboot("soft")
    assert bmc.power_state() == "on"


def test_hardware_info_and_console_come_from_config():
    bmc = MemoryBmcDriver(BmcAccess("10.1.0.7", "admin", "hunter2"), cpu=96, mem=393216,
                          serial_number="SN-42", model="R760")

    assert bmc.hw_info() == HardwareInfo(serial_number="SN-42", cpu=96, mem=393216, model="R760")
    assert bmc.console() == Console(type="html5", url="https://10.1.0.7/console")


def test_the_bmc_password_never_shows_in_a_repr():
    assert "hunter2" not in repr(BmcAccess("10.1.0.7", "admin", "hunter2"))


def test_power_state_survives_a_restart_through_the_state_file(tmp_path):
    state_file = tmp_path / "bmc.json"
    MemoryBmcDriver(state_file=state_file).power_on()

    assert MemoryBmcDriver(state_file=state_file).power_state() == "on"


def test_a_corrupt_state_file_is_reported_by_name(tmp_path):
    state_file = tmp_path / "bmc.json"
    state_file.write_text("{not json")

    with pytest.raises(DriverError, match="unreadable power state file .*bmc.json"):
        MemoryBmcDriver(state_file=state_file)


def test_validate_refuses_a_state_file_in_a_missing_directory(tmp_path):
    bmc = MemoryBmcDriver(state_file=tmp_path / "missing" / "bmc.json")

    with pytest.raises(DriverError, match="cannot write the power state file"):
        bmc.validate()
    MemoryBmcDriver(state_file=tmp_path / "bmc.json").validate()
