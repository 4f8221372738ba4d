"""Kernel modules found in an unpacked kernel and ordered by the dependencies their .modinfo names."""

from __future__ import annotations

import pytest

from dpustack.lab.kernel_modules import KernelModules
from dpustack.lab.state import LabError

from .kernel_files import VIRTIO, kernel_module, modules_dir

def test_dependencies_come_first_in_the_order_the_modules_list_them(tmp_path):
    modules = KernelModules(modules_dir(tmp_path, VIRTIO))

    assert modules.load_order(["virtio_pci", "virtio_blk"]) == [
        "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci", "virtio_blk"]
    assert modules.load_order(["virtio-net"]) == ["failover", "net_failover", "virtio_ring", "virtio", "virtio_net"]


def test_a_module_built_into_the_kernel_needs_no_loading(tmp_path):
    modules = KernelModules(modules_dir(tmp_path, {"drivers/block/virtio_blk.ko": ["virtio_ring", "virtio"]},
                                        builtin=["drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko"]))

    assert modules.load_order(["virtio_ring", "virtio", "virtio_blk"]) == ["virtio_blk"]


def test_compressed_modules_are_handed_out_decompressed(tmp_path):
    modules = KernelModules(modules_dir(tmp_path, {"drivers/virtio/virtio.ko.xz": [],
                                                   "drivers/block/virtio_blk.ko.gz": ["virtio"]}))

    assert modules.load_order(["virtio_blk"]) == ["virtio", "virtio_blk"]
    assert modules.object_code("virtio_blk") == kernel_module("virtio_blk", ["virtio"])


def test_a_missing_module_is_named_with_the_reason(tmp_path):
    modules = KernelModules(modules_dir(tmp_path, VIRTIO, builtin=["net/packet/af_packet.ko"]))

    with pytest.raises(LabError, match=r"no file for 'virtio_scsi' \(not a module of this kernel\)") as error:
        modules.load_order(["virtio_blk", "virtio_scsi"])
    assert error.value.field == "modules"
    with pytest.raises(LabError, match=r"no file for 'af_packet' \(built into the kernel\)"):
        modules.path("af_packet")
    with pytest.raises(LabError, match="no kernel module directory"):
        KernelModules(tmp_path / "nowhere")


def test_modules_that_need_each_other_are_refused(tmp_path):
    modules = KernelModules(modules_dir(tmp_path, {"a.ko": ["b"], "b.ko": ["a"]}))

    with pytest.raises(LabError, match="in a circle: a -> b -> a"):
        modules.load_order(["a"])
