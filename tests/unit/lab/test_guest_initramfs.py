"""The lab guest's initramfs: busybox and its applets, the caller's /init, the modules in load order."""

from __future__ import annotations

import gzip
import stat

import pytest

from dpustack.lab.cpio_archive import read_newc
from dpustack.lab.guest_initramfs import BUSYBOX, INIT_PRELUDE, build_initramfs, init_script
from dpustack.lab.kernel_modules import KernelModules
from dpustack.lab.state import LabError

from .kernel_files import VIRTIO, kernel_module, modules_dir


def unpacked(path) -> dict:
    return read_newc(gzip.decompress(path.read_bytes()))


def test_the_initramfs_holds_busybox_the_init_and_the_modules_it_loads(tmp_path):
    modules = KernelModules(modules_dir(tmp_path, VIRTIO))
    init = init_script("echo ready\npoweroff -f")

    built = build_initramfs(tmp_path / "initramfs.gz", init, modules=modules, load=["virtio_pci", "virtio_blk"],
                            files={"etc/hosts": b"127.0.0.1 localhost\n"},
                            scripts={"etc/udhcpc/default.script": "#!/bin/sh\nexit 0\n"})

    entries = unpacked(built.path)
    assert entries["init"].data.decode() == init and entries["init"].is_file
    assert stat.S_IMODE(entries["init"].mode) == 0o755
    assert entries["bin/busybox"].data == BUSYBOX.read_bytes() and stat.S_IMODE(entries["bin/busybox"].mode) == 0o755
    for applet in ("bin/sh", "sbin/insmod", "sbin/poweroff", "bin/mount", "bin/dd"):
        assert stat.S_ISLNK(entries[applet].mode) and entries[applet].data == b"/bin/busybox", applet
    assert built.modules == ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio",
                             "virtio_pci", "virtio_blk")
    load_order = entries["lib/modules/load-order"].data.decode().splitlines()
    assert load_order == [f"/lib/modules/{module}.ko" for module in built.modules]
    assert entries["lib/modules/virtio_blk.ko"].data == kernel_module("virtio_blk", ["virtio_ring", "virtio"])
    assert "lib/modules/virtio_net.ko" not in entries  # only what was asked for and what it needs
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)
    assert all(stat.S_ISDIR(entries[d].mode) for d in ("proc", "sys", "dev", "tmp", "run"))
    assert entries["etc/hosts"].data == b"127.0.0.1 localhost\n" and stat.S_IMODE(entries["etc/hosts"].mode) == 0o644
    assert stat.S_IMODE(entries["etc/udhcpc/default.script"].mode) == 0o755


def test_it_stays_small(tmp_path):
    built = build_initramfs(tmp_path / "initramfs.gz", init_script("poweroff -f"),
                            modules=KernelModules(modules_dir(tmp_path, VIRTIO)), load=["virtio_blk"])
    assert built.path.stat().st_size < 1.5 * 1024 * 1024


def test_init_script_mounts_and_loads_the_modules_before_the_body():
    script = init_script("\necho hello\n\n")
    assert script.startswith("#!/bin/sh\n") and script == INIT_PRELUDE + "echo hello\n"
    assert "mount -t devtmpfs devtmpfs /dev" in script
    assert 'insmod "$module"' in script and "< /lib/modules/load-order" in script


def test_without_modules_the_list_is_empty(tmp_path):
    built = build_initramfs(tmp_path / "initramfs.gz", init_script("poweroff -f"))
    assert built.modules == () and unpacked(built.path)["lib/modules/load-order"].data == b""
    with pytest.raises(LabError, match="modules to load need the kernel's module directory"):
        build_initramfs(tmp_path / "other.gz", "", load=["virtio_blk"])


def test_a_busybox_that_needs_shared_libraries_is_refused(tmp_path):
    with pytest.raises(LabError, match=r"/usr/bin/env is not a static x86-64 executable.*busybox-static") as error:
        build_initramfs(tmp_path / "initramfs.gz", "", busybox=BUSYBOX.with_name("env"))
    assert error.value.field == "busybox"
    with pytest.raises(LabError, match="cannot read"):
        build_initramfs(tmp_path / "initramfs.gz", "", busybox=tmp_path / "no-busybox")
    assert not (tmp_path / "initramfs.gz").exists()


def test_a_file_of_the_callers_cannot_replace_one_of_the_initramfs(tmp_path):
    with pytest.raises(LabError, match="cannot put 'init' in the initramfs: 'init' is in the archive") as error:
        build_initramfs(tmp_path / "initramfs.gz", "", scripts={"init": "#!/bin/sh\n"})
    assert error.value.field == "scripts"
    with pytest.raises(LabError, match="is not a path inside the archive") as error:
        build_initramfs(tmp_path / "initramfs.gz", "", files={"../etc/passwd": b""})
    assert error.value.field == "files"


def test_a_program_comes_as_bytes_with_its_symlinks(tmp_path):
    program = b"\x7fELF\x02\x01 not really"
    built = build_initramfs(tmp_path / "initramfs.gz", "", scripts={"usr/sbin/prog": program},
                            files={"usr/lib/libx.so.1.2": b"lib"},
                            links={"usr/lib/libx.so.1": "libx.so.1.2", "lib64/ld.so": "/lib/ld.so"})
    entries = unpacked(built.path)
    assert entries["usr/sbin/prog"].data == program and stat.S_IMODE(entries["usr/sbin/prog"].mode) == 0o755
    assert stat.S_ISLNK(entries["usr/lib/libx.so.1"].mode) and entries["usr/lib/libx.so.1"].data == b"libx.so.1.2"
    assert entries["lib64/ld.so"].data == b"/lib/ld.so" and stat.S_ISDIR(entries["lib64"].mode)
    with pytest.raises(LabError, match="cannot put the link 'bin/sh' in the initramfs") as error:
        build_initramfs(tmp_path / "other.gz", "", links={"bin/sh": "/usr/bin/dash"})  # busybox's applet
    assert error.value.field == "links"
