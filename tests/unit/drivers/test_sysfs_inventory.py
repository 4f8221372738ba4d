"""SysfsInventoryDriver on generated trees: what a node's PCI hardware looks like to dpustack."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dpustack.drivers.inventory import InventoryDriver
from dpustack.drivers.inventory.memory import MemoryInventoryDriver
from dpustack.drivers.inventory.sysfs import SysfsInventoryDriver
from dpustack.drivers.registry import load_driver
from dpustack.errors import DriverError
from dpustack.lab import pcitrees
from dpustack.pci.device import PciDevice

SERIAL = "MT2146X00042"


@pytest.fixture
def bf2(tmp_path: Path) -> SysfsInventoryDriver:
    tree = pcitrees.write_node(tmp_path, [pcitrees.bluefield2(SERIAL, numa_node=1), pcitrees.vmd_nvme()])
    return SysfsInventoryDriver(tree.root, tree.devlink_json)


def by_address(driver: InventoryDriver) -> dict[str, PciDevice]:
    return {device.address: device for device in driver.devices()}


def test_a_bluefield2_shows_two_pfs_with_four_vfs_each(bf2):
    devices = by_address(bf2)
    pfs = [d for d in devices.values() if d.dev_type == "type-PF"]
    vfs = [d for d in devices.values() if d.dev_type == "type-VF"]

    assert [(d.address, d.vendor_id, d.product_id) for d in pfs] == [
        ("0000:05:00.0", "15b3", "a2d6"), ("0000:05:00.1", "15b3", "a2d6")]
    assert {(d.vendor_id, d.product_id) for d in vfs} == {("15b3", "101e")}
    assert [(d.sriov_totalvfs, d.sriov_numvfs, d.sriov_vf_device) for d in pfs] == [(127, 4, "101e")] * 2
    assert (pfs[0].class_code, pfs[0].subsystem_vendor_id, pfs[0].driver) == ("020000", "15b3", "mlx5_core")


def test_vf_logical_numbers_come_from_the_pf_virtfn_links(bf2):
    devices = by_address(bf2)

    assert [(a, d.parent_addr, d.vf_num) for a, d in devices.items() if d.dev_type == "type-VF"] == [
        ("0000:05:00.3", "0000:05:00.0", 0), ("0000:05:00.4", "0000:05:00.0", 1),
        ("0000:05:00.5", "0000:05:00.0", 2), ("0000:05:00.6", "0000:05:00.0", 3),
        ("0000:05:02.3", "0000:05:00.1", 0), ("0000:05:02.4", "0000:05:00.1", 1),
        ("0000:05:02.5", "0000:05:00.1", 2), ("0000:05:02.6", "0000:05:00.1", 3)]


def test_vfs_inherit_the_card_serial_and_carry_their_pf_mac(bf2):
    devices = by_address(bf2)
    pf1 = devices["0000:05:00.1"]
    vf = devices["0000:05:02.6"]

    assert not (bf2.root / "bus/pci/devices/0000:05:02.6/vpd").exists()  # the serial is in the PFs' VPD only
    assert (pf1.card_serial_number, vf.card_serial_number) == (SERIAL, SERIAL)
    assert (vf.devname, vf.pf_mac) == ("enp5s0f1np0v3", pf1.mac)
    assert pf1.devname == "enp5s0f1" and pf1.mac.startswith("0c:42:a1:")


def test_numa_nodes_are_read_and_minus_one_means_unknown(bf2, tmp_path):
    devices = by_address(bf2)
    assert {d.numa_node for a, d in devices.items() if a.startswith("0000:05:")} == {1}

    (bf2.root / "bus/pci/devices/0000:05:00.0/numa_node").write_text("-1\n")
    assert by_address(bf2)["0000:05:00.0"].numa_node is None


def test_a_device_in_a_32_bit_domain_is_kept(bf2):
    nvme = by_address(bf2)["10000:01:00.0"]

    assert (nvme.vendor_id, nvme.product_id, nvme.driver, nvme.dev_type) == ("8086", "0a54", "nvme", "type-PCI")


def test_the_tree_uses_the_kernel_layout_of_relative_symlinks(bf2):
    link = bf2.root / "bus/pci/devices/0000:05:02.3"

    assert os.readlink(link) == "../../../devices/pci0000:05/0000:05:02.3"
    assert os.readlink(link / "physfn") == "../0000:05:00.1"
    assert os.readlink(bf2.root / "bus/pci/devices/0000:05:00.1/virtfn0") == "../0000:05:02.3"
    assert os.readlink(link / "driver") == "../../../bus/pci/drivers/mlx5_core"


def test_a_corrupt_vpd_is_reported_and_neither_that_pf_nor_its_vfs_get_a_serial(bf2):
    vpd = bf2.root / "bus/pci/devices/0000:05:00.0/vpd"
    data = bytearray(vpd.read_bytes())
    data[data.index(SERIAL.encode())] ^= 0x20
    vpd.write_bytes(bytes(data))

    devices = by_address(bf2)

    assert "bad RV checksum" in devices["0000:05:00.0"].vpd_error
    assert devices["0000:05:00.0"].card_serial_number == ""
    assert devices["0000:05:00.3"].card_serial_number == ""
    assert devices["0000:05:02.3"].card_serial_number == SERIAL  # PF1's VPD is intact


def test_a_truncated_vpd_is_reported_not_raised(bf2):
    vpd = bf2.root / "bus/pci/devices/0000:05:00.1/vpd"
    vpd.write_bytes(vpd.read_bytes()[:30])

    assert by_address(bf2)["0000:05:00.1"].vpd_error.startswith("VPD error: truncated")


def test_devlink_ports_come_from_the_json_file(bf2):
    ports = bf2.devlink_ports()

    assert [p.netdev for p in ports if p.flavour == "pcivf"] == [f"pf{p}vf{v}" for p in (0, 1) for v in range(4)]
    pf0 = next(p for p in ports if p.netdev == "pf0hpf")
    assert pf0.hw_addr == by_address(bf2)["0000:05:00.0"].mac


def test_a_corrupt_devlink_file_is_a_driver_error_naming_it(bf2):
    bf2.devlink_json.write_text(json.dumps({"port": {"pci/0000:03:00.0/1": {"flavour": "pcivf", "vfnum": "x"}}}))

    with pytest.raises(DriverError, match=r"devlink.json: devlink: port.pci/0000:03:00.0/1.vfnum"):
        bf2.devlink_ports()


def test_validate_names_a_missing_root(tmp_path):
    with pytest.raises(DriverError, match="check pci.root"):
        SysfsInventoryDriver(tmp_path / "nowhere").validate()


def test_without_devlink_json_or_a_devlink_binary_there_are_no_ports(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    assert SysfsInventoryDriver(pcitrees.write_tree(tmp_path / "sys", [])).devlink_ports() == []


def test_drivers_are_found_by_name():
    assert isinstance(load_driver(InventoryDriver, "sysfs", root="/sys"), SysfsInventoryDriver)
    assert isinstance(load_driver(InventoryDriver, "memory"), MemoryInventoryDriver)


def test_the_memory_driver_applies_the_same_inheritance():
    pf = PciDevice("0000:05:00.0", "15b3", "a2d6", dev_type="type-PF", mac="0c:42:a1:00:00:01",
                   card_serial_number="MT1")
    vf = PciDevice("0000:05:00.3", "15b3", "101e", dev_type="type-VF", parent_addr=pf.address, vf_num=0)

    assert [(d.card_serial_number, d.pf_mac) for d in MemoryInventoryDriver([vf, pf]).devices()] == [
        ("MT1", ""), ("MT1", "0c:42:a1:00:00:01")]


def test_a_function_with_unreadable_ids_is_skipped_with_a_warning_and_the_rest_listed(bf2, caplog):
    (bf2.root / "bus/pci/devices/0000:05:00.4/vendor").write_text("garbage\n")

    devices = by_address(bf2)

    assert "0000:05:00.4" not in devices and "0000:05:00.5" in devices
    assert any("skipping 0000:05:00.4" in r.message for r in caplog.records)
