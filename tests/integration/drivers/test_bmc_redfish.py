"""The Redfish BMC driver against sushy-tools' emulator (libvirt test:///default, domain 'test')."""

from __future__ import annotations

import base64
import logging

import pytest

from bmc import agent_app, redfish_bmc, terse_redfish_bmc  # noqa: F401  (fixtures)
from dpustack.drivers.bmc import BmcAccess, Console, HardwareInfo
from dpustack.drivers.bmc.redfish import RedfishBmcDriver
from dpustack.errors import DriverError
from dpustack.lab.bmcs import EmulatedBmc
from dpustack.lab.processes import free_port
from dpustack.secrets import encrypt

# the libvirt test driver's domain 'test' as the emulator shows it: no System serial or model,
# so they come from the emulator's static Chassis ("Contoso 3500RX", serial 437XR1138R2)
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
TEST_DOMAIN = HardwareInfo(serial_number="437XR1138R2", cpu=2, mem=8 * 1024, model="Contoso 3500RX")


@pytest.fixture
def bmc(redfish_bmc: EmulatedBmc) -> RedfishBmcDriver:
    return RedfishBmcDriver(redfish_bmc.access(), timeout=10, poll_interval=0.1)


@pytest.fixture
def running_host(bmc: RedfishBmcDriver) -> RedfishBmcDriver:
    bmc.power_on()
    return bmc


@pytest.fixture
def stopped_host(bmc: RedfishBmcDriver) -> RedfishBmcDriver:
    bmc.power_off()
    return bmc


def test_the_driver_validates_its_settings(bmc):
    bmc.validate()

    with pytest.raises(DriverError, match="must be the Redfish service URL"):
        RedfishBmcDriver(BmcAccess("10.1.0.7", "admin", "pw")).validate()
    with pytest.raises(DriverError, match="username is empty"):
        RedfishBmcDriver(BmcAccess("https://10.1.0.7", "", "pw")).validate()


def test_power_on_starts_a_stopped_host_and_is_idempotent(stopped_host):
    stopped_host.power_on()
    assert stopped_host.power_state() == "on"

    stopped_host.power_on()  # already on: no request, no error
    assert stopped_host.power_state() == "on"


def test_power_off_stops_a_running_host_and_is_idempotent(running_host):
    running_host.power_off()
    assert running_host.power_state() == "off"

    running_host.power_off()
    assert running_host.power_state() == "off"


def test_a_soft_power_off_shuts_the_host_down(running_host):
    running_host.power_off(soft=True)

    assert running_host.power_state() == "off"


def test_a_hard_reboot_leaves_a_running_host_on(running_host):
    running_host.reboot("hard")

    assert running_host.power_state() == "on"


def test_a_hard_reboot_starts_a_stopped_host(stopped_host):
    stopped_host.reboot("hard")

    assert stopped_host.power_state() == "on"


def test_a_soft_reboot_leaves_a_running_host_on(running_host):
    running_host.reboot("soft")

    assert running_host.power_state() == "on"


def test_a_soft_reboot_of_a_stopped_host_is_refused_and_leaves_it_off(stopped_host):
    with pytest.raises(DriverError, match="soft reboot needs a running host, and it is off"):
        stopped_host.reboot("soft")

    assert stopped_host.power_state() == "off"


def test_hw_info_describes_the_emulated_host(bmc):
    assert bmc.hw_info() == TEST_DOMAIN


def test_a_bmc_that_does_not_report_cpu_and_memory_falls_back_to_config(terse_redfish_bmc):
    bmc = RedfishBmcDriver(terse_redfish_bmc.access(), cpu=96, mem=393216)

    # no chassis either: the System UUID stands in for the serial number, its name for the model
    assert bmc.hw_info() == HardwareInfo(serial_number=TEST_DOMAIN_UUID, cpu=96, mem=393216, model="test")


def test_a_bmc_that_does_not_report_cpu_and_memory_needs_them_in_config(terse_redfish_bmc):
    with pytest.raises(DriverError, match=r"does not report the host's cpu; set \[bmc.host\] cpu"):
        RedfishBmcDriver(terse_redfish_bmc.access()).hw_info()


def test_the_system_can_be_named_by_id(redfish_bmc):
    bmc = RedfishBmcDriver(redfish_bmc.access(), system_id=TEST_DOMAIN_UUID)

    assert bmc.hw_info().cpu == 2


def test_an_unknown_system_id_names_the_systems_the_bmc_has(redfish_bmc):
    bmc = RedfishBmcDriver(redfish_bmc.access(), system_id="no-such-host")

    with pytest.raises(DriverError, match=f"has no system 'no-such-host' \\(it has: {TEST_DOMAIN_UUID}\\)"):
        bmc.power_state()


def test_the_console_says_the_emulator_advertises_none_and_points_at_its_manager(bmc, redfish_bmc):
    # sushy-tools' Manager has no SerialConsole/GraphicalConsole, so there is no console to offer
    assert bmc.console() == Console(type="none", url=f"{redfish_bmc.address}/redfish/v1/Managers/{TEST_DOMAIN_UUID}")


def test_without_any_manager_the_console_points_at_the_system(terse_redfish_bmc):
    bmc = RedfishBmcDriver(terse_redfish_bmc.access())

    assert bmc.console() == Console(type="none",
                                    url=f"{terse_redfish_bmc.address}/redfish/v1/Systems/{TEST_DOMAIN_UUID}")


def test_a_wrong_password_is_a_readable_error_that_never_shows_the_password(redfish_bmc, caplog):
    password = "Wr0ng-but-Secret-7731"
    bmc = RedfishBmcDriver(BmcAccess(redfish_bmc.address, redfish_bmc.username, password))

    with caplog.at_level(logging.DEBUG), pytest.raises(DriverError) as caught:
        bmc.power_on()

    message = caught.value.message
    assert message == (f"bmc.power_on: the Redfish service at {redfish_bmc.address} refused the login of user "
                       f"'{redfish_bmc.username}' (HTTP 401); check [bmc] username and password")
    basic = base64.b64encode(f"{redfish_bmc.username}:{password}".encode()).decode()
    for text in (message, caplog.text, repr(bmc), repr(caught.value)):
        assert password not in text and basic not in text
    assert caplog.records, "the failing login was logged at all (otherwise this test proves nothing)"


def test_an_unreachable_service_is_a_readable_error():
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    with pytest.raises(DriverError) as caught:
        RedfishBmcDriver(BmcAccess(address, "admin", "pw"), request_timeout=2).power_state()

    assert caught.value.message == f"bmc.power_state: cannot reach the Redfish service at {address}: connection refused"


def test_an_agent_with_a_redfish_bmc_reports_the_hosts_cpu_and_memory(redfish_bmc, tmp_path):
    key_file = tmp_path / "secret.key"
    bmc_config = {"address": redfish_bmc.address, "username": redfish_bmc.username,
                  "password_encrypted": encrypt(redfish_bmc.password, key_file=key_file),
                  "secret_key_file": str(key_file), "redfish": {"timeout": 10}}

    with agent_app(tmp_path / "state", {"bmc": "redfish"}, bmc_config) as agent:
        status = agent.get("/v1/status").json()
        assert (status["ready"], status["total_cpu"], status["total_mem"]) == (True, 2, 8192)
        assert agent.get("/v1/bmc/hw_info").json()["serial_number"] == TEST_DOMAIN.serial_number

        assert agent.post("/v1/bmc/power_off").json() == {"power_state": "off"}
        assert agent.get("/v1/bmc/power").json() == {"power_state": "off"}
        assert agent.post("/v1/bmc/power_on").json() == {"power_state": "on"}
