"""The lab snic controller on real namespaces: functions are veth pairs between a host and a DPU namespace."""

from __future__ import annotations

import subprocess

import pytest
from netns import interface_names, ip_link, lab_namespaces, tx_checksum_offload  # noqa: F401 (fixture)

from dpustack.drivers.functions import FunctionSpec, lab_wire
from dpustack.drivers.functions.lab import LabFunctionDriver, host_ifname
from dpustack.errors import DriverError
from dpustack.linux import netns

MAC = "aa:bb:cc:dd:ee:01"


@pytest.fixture
def driver(lab_namespaces, tmp_path) -> LabFunctionDriver:
    lab = LabFunctionDriver(lab_namespaces.host, lab_namespaces.dpu, state_dir=tmp_path / "state")
    lab.validate()
    return lab


def _restarted(driver: LabFunctionDriver) -> LabFunctionDriver:
    """A new driver on the same namespaces and state, as a restarted agent builds it."""
    return LabFunctionDriver(driver.host_netns, driver.dpu_netns, state_dir=driver.state_dir)


def test_a_net_pf_is_a_host_nic_with_its_mac_wired_to_an_up_representor_on_the_dpu(driver, lab_namespaces):
    function = driver.create(FunctionSpec("net-p1", slot=3, mac=MAC, features=("tso",)))

    assert (function.bdf, function.representor, function.mac) == ("0000:44:00.0", "pf3hpf", MAC)
    host_nic = ip_link(lab_namespaces.host, "ens3f0")
    representor = ip_link(lab_namespaces.dpu, "pf3hpf")
    assert host_nic is not None and representor is not None
    assert host_nic["address"] == MAC
    assert "UP" in host_nic["flags"] and "UP" in representor["flags"]
    assert host_nic["operstate"] == representor["operstate"] == "UP"
    assert tx_checksum_offload(lab_namespaces.host, "ens3f0") == "off"
    assert tx_checksum_offload(lab_namespaces.dpu, "pf3hpf") == "off"
    assert "pf3hpf" not in interface_names(lab_namespaces.host)
    assert "ens3f0" not in interface_names(lab_namespaces.dpu)
    assert driver.get("net-p1") == function


def test_a_vf_gets_a_vf_representor_and_a_host_nic_at_pci_function_1(driver, lab_namespaces):
    function = driver.create(FunctionSpec("net-v2", slot=2, type="VF", mac="aa:bb:cc:dd:ee:02"))

    assert (function.bdf, function.representor) == ("0000:43:00.0", "pf0vf2")
    assert ip_link(lab_namespaces.host, "ens2f0")["address"] == "aa:bb:cc:dd:ee:02"
    assert ip_link(lab_namespaces.dpu, "pf0vf2") is not None


def test_host_nic_names_fit_linux_limits_for_every_slot():
    assert host_ifname(0) == "ens0f0"
    assert host_ifname(190) == "ens190f0"
    with pytest.raises(DriverError, match="too long"):
        LabFunctionDriver("h", "d", host_prefix="hostnicprefix")


def test_a_storage_function_has_a_bdf_but_no_netdev(driver, lab_namespaces):
    host_before, dpu_before = interface_names(lab_namespaces.host), interface_names(lab_namespaces.dpu)

    function = driver.create(FunctionSpec("vol-1", slot=4, kind="storage"))

    assert (function.bdf, function.representor, function.kind) == ("0000:45:00.0", "snap4", "storage")
    assert interface_names(lab_namespaces.host) == host_before
    assert interface_names(lab_namespaces.dpu) == dpu_before
    assert driver.get("vol-1") == function
    assert [f.id for f in driver.list()] == ["vol-1"]


def test_creating_an_existing_function_again_returns_it_and_leaves_the_nic_alone(driver, lab_namespaces):
    spec = FunctionSpec("net-p1", slot=1, mac=MAC)
    first = driver.create(spec)
    index = ip_link(lab_namespaces.host, "ens1f0")["ifindex"]

    assert driver.create(spec) == first
    assert ip_link(lab_namespaces.host, "ens1f0")["ifindex"] == index
    assert len(driver.list()) == 1
    with pytest.raises(DriverError, match="already exists"):
        driver.create(spec, may_exist=False)


def test_the_same_id_with_another_mac_is_refused_and_the_nic_keeps_its_mac(driver, lab_namespaces):
    driver.create(FunctionSpec("net-p1", slot=1, mac=MAC))

    with pytest.raises(DriverError, match="'net-p1' exists with a different .*aa:bb:cc:dd:ee:99"):
        driver.create(FunctionSpec("net-p1", slot=1, mac="aa:bb:cc:dd:ee:99"))

    assert ip_link(lab_namespaces.host, "ens1f0")["address"] == MAC


def test_two_functions_cannot_share_a_slot(driver):
    driver.create(FunctionSpec("vol-1", slot=1, kind="storage"))

    with pytest.raises(DriverError, match="slot 1 is taken by function 'vol-1'"):
        driver.create(FunctionSpec("net-p1", slot=1, mac=MAC))


def test_a_foreign_interface_with_the_representor_name_is_reported_not_replaced(driver, lab_namespaces):
    netns.run(lab_namespaces.dpu, ["ip", "link", "add", "pf5hpf", "type", "veth", "peer", "name", "other5"])

    with pytest.raises(DriverError, match="'pf5hpf' already exists in namespace .* not a dpustack function"):
        driver.create(FunctionSpec("net-p5", slot=5, mac=MAC))

    assert driver.list() == []
    assert ip_link(lab_namespaces.dpu, "pf5hpf") is not None
    assert "ens5f0" not in interface_names(lab_namespaces.host)


def test_a_bad_mac_is_refused_with_its_value(driver):
    with pytest.raises(DriverError, match="'01:00:5e:00:00:01' is not a unicast MAC"):
        driver.create(FunctionSpec("net-p1", slot=1, mac="01:00:5e:00:00:01"))


def test_delete_removes_both_ends_and_deleting_again_is_fine(driver, lab_namespaces):
    driver.create(FunctionSpec("net-p1", slot=1, mac=MAC))
    driver.create(FunctionSpec("vol-2", slot=2, kind="storage"))

    driver.delete("net-p1")
    driver.delete("vol-2")
    driver.delete("net-p1")

    assert ip_link(lab_namespaces.host, "ens1f0") is None
    assert ip_link(lab_namespaces.dpu, "pf1hpf") is None
    assert driver.list() == []
    with pytest.raises(DriverError, match="'net-p1' does not exist"):
        driver.delete("net-p1", if_exists=False)


def test_a_restarted_agent_finds_the_same_functions(driver):
    created = [driver.create(FunctionSpec("net-p1", slot=1, mac=MAC, features=("tso", "csum"))),
               driver.create(FunctionSpec("net-v3", slot=3, type="VF")),
               driver.create(FunctionSpec("vol-2", slot=2, kind="storage"))]

    restarted = _restarted(driver)

    assert restarted.list() == sorted(created, key=lambda f: f.slot)
    assert restarted.get("net-v3").mac == created[1].mac  # a MAC chosen by the driver is stable


def test_after_a_soc_reboot_create_brings_back_the_same_names_mac_and_bdf(driver, lab_namespaces):
    spec = FunctionSpec("net-p1", slot=7, mac=MAC)
    before = driver.create(spec)
    netns.run(lab_namespaces.dpu, ["ip", "link", "del", "pf7hpf"])  # behind the driver's back

    restarted = _restarted(driver)
    assert restarted.get("net-p1") is None
    after = restarted.create(spec)

    assert after == before
    assert ip_link(lab_namespaces.host, "ens7f0")["address"] == MAC
    assert ip_link(lab_namespaces.dpu, "pf7hpf") is not None
    assert tx_checksum_offload(lab_namespaces.host, "ens7f0") == "off"


def test_a_storage_function_does_not_outlive_its_dpu_namespace(driver, lab_namespaces):
    driver.create(FunctionSpec("vol-1", slot=1, kind="storage"))

    netns.delete(lab_namespaces.dpu)  # the DPU is powered off and back on
    netns.create(lab_namespaces.dpu)

    assert _restarted(driver).list() == []


def test_a_ping_crosses_from_the_host_nic_to_its_representor(driver, lab_namespaces):
    driver.create(FunctionSpec("net-p1", slot=1, mac=MAC))
    netns.run(lab_namespaces.host, ["ip", "addr", "add", "192.0.2.1/30", "dev", "ens1f0"])
    netns.run(lab_namespaces.dpu, ["ip", "addr", "add", "192.0.2.2/30", "dev", "pf1hpf"])

    ping = netns.run(lab_namespaces.host, ["ping", "-c", "1", "-W", "2", "192.0.2.2"], check=False)

    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_a_missing_namespace_is_named_by_validate_and_by_every_call(lab_namespaces, tmp_path):
    lab = LabFunctionDriver(lab_namespaces.host, "dpt-no-such-dpu", state_dir=tmp_path)

    with pytest.raises(DriverError, match="'dpt-no-such-dpu'"):
        lab.validate()
    with pytest.raises(DriverError, match="namespace 'dpt-no-such-dpu' does not exist"):
        lab.create(FunctionSpec("net-p1", slot=1, mac=MAC))
    assert not netns.exists("dpt-no-such-dpu")  # never created as a side effect


def test_an_up_state_changed_behind_the_driver_is_restored_by_create(driver, lab_namespaces):
    spec = FunctionSpec("net-p1", slot=1, mac=MAC)
    driver.create(spec)
    subprocess.run(["ip", "-n", lab_namespaces.dpu, "link", "set", "pf1hpf", "down"], check=True)

    driver.create(spec)

    assert "UP" in ip_link(lab_namespaces.dpu, "pf1hpf")["flags"]


def test_a_representor_whose_host_nic_went_astray_is_rebuilt_by_create(driver, lab_namespaces):
    spec = FunctionSpec("net-p1", slot=1, mac=MAC)
    before = driver.create(spec)
    netns.run(lab_namespaces.host, ["ip", "link", "set", "ens1f0", "down"])
    netns.run(lab_namespaces.host, ["ip", "link", "set", "ens1f0", "name", "eth9"])

    assert driver.list() == []  # half a function is not reported as one
    assert driver.create(spec) == before
    assert ip_link(lab_namespaces.host, "ens1f0")["address"] == MAC
    assert "eth9" not in interface_names(lab_namespaces.host)


# -- tap mode: a VM node's host, whose hypervisor opens the taps -------------------------------------------
def _tap_driver(lab_namespaces, tmp_path) -> LabFunctionDriver:
    driver = LabFunctionDriver(lab_namespaces.host, lab_namespaces.dpu, state_dir=tmp_path / "state", taps=True)
    driver.validate()
    return driver


def test_in_tap_mode_a_net_function_has_a_tap_wired_to_its_host_end(lab_namespaces, tmp_path):
    driver = _tap_driver(lab_namespaces, tmp_path)

    function = driver.create(FunctionSpec("net-p1", slot=3, mac=MAC))

    assert function.bdf == "0000:44:00.0"
    assert lab_wire.is_wired(lab_namespaces.host, "tap3", "ens3f0")
    assert driver.list() == [function] and driver.get("net-p1") == function
    assert driver.create(FunctionSpec("net-p1", slot=3, mac=MAC)) == function  # again: nothing to do


def test_in_tap_mode_a_function_whose_tap_is_gone_does_not_count_until_created_again(lab_namespaces, tmp_path):
    driver = _tap_driver(lab_namespaces, tmp_path)
    function = driver.create(FunctionSpec("net-p1", slot=3, mac=MAC))
    lab_wire.remove_wire(lab_namespaces.host, "tap3")

    assert driver.list() == [] and driver.get("net-p1") is None

    assert driver.create(FunctionSpec("net-p1", slot=3, mac=MAC)) == function
    assert lab_wire.is_wired(lab_namespaces.host, "tap3", "ens3f0")


def test_in_tap_mode_delete_removes_the_tap_with_the_pair(lab_namespaces, tmp_path):
    driver = _tap_driver(lab_namespaces, tmp_path)
    driver.create(FunctionSpec("net-p1", slot=3, mac=MAC))

    driver.delete("net-p1")

    assert {"tap3", "ens3f0"} & interface_names(lab_namespaces.host) == set()
    assert driver.list() == []
