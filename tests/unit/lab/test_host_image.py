"""Building the host image with the real mkfs.fat, syslinux and mcopy, from a made-up kernel: what is on the
disk, when a built one is re-used, what a missing tool says."""

from __future__ import annotations

import dataclasses
import gzip
import os
import stat
import subprocess
from pathlib import Path

import pytest

from dpustack.lab import host_image, host_init
from dpustack.lab.cpio_archive import read_newc
from dpustack.lab.guest_kernel import GuestKernel
from dpustack.lab.guest_programs import GuestProgram
from dpustack.lab.host_image import ID_FILE, SYSLINUX_CFG, build_host_image
from dpustack.lab.state import LabError

from .elf_files import elf_object
from .kernel_files import VIRTIO, bzimage, modules_dir

FAT_MODULES = {"fs/fat/fat.ko": [], "fs/fat/vfat.ko": ["fat"], "fs/nls/nls_cp437.ko": [],
               "fs/nls/nls_ascii.ko": []}
BUTTON_MODULES = {"drivers/acpi/button.ko": [], "drivers/input/evdev.ko": []}
CONSOLE_MODULES = {"drivers/char/virtio_console.ko": ["virtio", "virtio_ring"]}
LOADER = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
GLIB = "usr/lib/x86_64-linux-gnu/libglib-2.0.so.0"
#: Debian's qemu-ga as guest_programs.resolve gives it, made small
AGENT = GuestProgram(
    "usr/sbin/qemu-ga",
    executables={"usr/sbin/qemu-ga": elf_object(needed=["libglib-2.0.so.0", "libc.so.6"],
                                                interpreter="/lib64/ld-linux-x86-64.so.2"),
                 LOADER: elf_object(soname="ld-linux-x86-64.so.2"),
                 "lib/x86_64-linux-gnu/libc.so.6": elf_object(soname="libc.so.6", needed=["ld-linux-x86-64.so.2"])},
    files={f"{GLIB}.7400.6": elf_object(soname="libglib-2.0.so.0", needed=["libc.so.6"])},
    links={"lib64/ld-linux-x86-64.so.2": f"/{LOADER}", GLIB: "libglib-2.0.so.0.7400.6"},
    packages=("qemu-guest-agent=1:7.2+dfsg-7", "libc6=2.36-9", "libglib2.0-0=2.74.6-2"))


def fake_kernel(root: Path, release: str = "6.1.0-57-cloud-amd64", image: bytes | None = None) -> GuestKernel:
    root.mkdir(parents=True, exist_ok=True)
    image_path = root / f"vmlinuz-{release}"
    image_path.write_bytes(image if image is not None else bzimage(b"\x02\x21\x4c\x18" + bytes(4096)))
    return GuestKernel(root, release, image_path, None, modules_dir(root, {**VIRTIO, **FAT_MODULES, **BUTTON_MODULES,
                                                                             **CONSOLE_MODULES}))


def copied_out(image: Path, name: str, tmp_path: Path) -> bytes:
    """A file of the image's FAT volume, read back with mcopy."""
    target = tmp_path / "out" / name
    target.parent.mkdir(exist_ok=True)
    subprocess.run(["mcopy", "-n", "-i", str(image), f"::/{name}", str(target)], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}, capture_output=True)
    return target.read_bytes()


def test_the_image_is_a_bootable_fat_volume_holding_the_kernel_and_the_init(tmp_path):
    kernel = fake_kernel(tmp_path / "kernel")

    built = build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=AGENT)

    assert built.path == tmp_path / "host.img" and not built.reused
    assert built.kernel_release == kernel.release and built.image_id.startswith(kernel.release + "-")
    disk = built.path.read_bytes()
    assert len(disk) == 48 << 20
    assert disk[71:82] == b"DPUSTACK   " and disk[82:90] == b"FAT32   " and disk[510:512] == b"\x55\xaa"
    assert b"SYSLINUX" in disk[:512]  # syslinux's boot sector
    assert copied_out(built.path, "ldlinux.sys", tmp_path)
    assert copied_out(built.path, "vmlinuz", tmp_path) == kernel.bzimage.read_bytes()
    assert copied_out(built.path, "syslinux.cfg", tmp_path).decode() == SYSLINUX_CFG
    assert copied_out(built.path, ID_FILE, tmp_path).decode() == built.image_id + "\n"
    initramfs = read_newc(gzip.decompress(copied_out(built.path, "initrd.gz", tmp_path)))
    assert initramfs["init"].data.decode().endswith(host_init.INIT_BODY + "\n")
    assert initramfs["etc/inittab"].data == host_init.guest_files()["etc/inittab"]
    assert initramfs["etc/dpustack/agent"].data.decode() == host_init.guest_scripts()["etc/dpustack/agent"]
    load_order = initramfs["lib/modules/load-order"].data.decode().split()
    assert [Path(module).stem for module in load_order][-7:] == ["fat", "vfat", "nls_cp437", "nls_ascii", "button",
                                                                 "evdev", "virtio_console"]
    watcher = "etc/dpustack/power-button"
    assert initramfs[watcher].data.decode() == host_init.guest_scripts()[watcher]
    assert (tmp_path / "host.img.id").read_text() == built.image_id + "\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".host.img.lock", "host.img", "host.img.id",
                                                                "kernel", "out"]  # no partial image left


def test_a_built_image_is_reused_until_its_kernel_or_init_changes(tmp_path, monkeypatch):
    kernel = fake_kernel(tmp_path / "kernel")
    first = build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=AGENT)
    written = first.path.stat().st_mtime_ns

    again = build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=AGENT)
    assert again.reused and again.image_id == first.image_id and first.path.stat().st_mtime_ns == written

    newer = build_host_image(tmp_path / "host.img", kernel=fake_kernel(tmp_path / "k2", "6.1.0-58-cloud-amd64"),
                             size_mib=48, guest_agent=AGENT)
    assert not newer.reused and newer.image_id != first.image_id

    monkeypatch.setattr(host_init, "INIT_BODY", "echo changed; exec /sbin/init")
    changed = build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=AGENT)
    assert not changed.reused and changed.image_id not in (first.image_id, newer.image_id)

    (tmp_path / "host.img.id").unlink()  # no record of what the image is: built again
    assert not build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=AGENT).reused


def test_a_missing_tool_names_its_debian_package(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(host_image, "SBIN", ())
    with pytest.raises(LabError, match=r"mkfs.fat is missing: .* Debian package dosfstools "
                                       r"\(apt-get install dosfstools syslinux mtools\)"):
        build_host_image(tmp_path / "host.img", kernel=fake_kernel(tmp_path / "kernel"), guest_agent=AGENT)
    assert not (tmp_path / "host.img").exists()


def test_an_image_too_small_is_refused(tmp_path):
    with pytest.raises(LabError, match="at least 48 MiB"):
        build_host_image(tmp_path / "host.img", kernel=fake_kernel(tmp_path / "kernel"), size_mib=32,
                         guest_agent=AGENT)
    big = fake_kernel(tmp_path / "big", image=bzimage(b"\x02\x21\x4c\x18" + bytes(46 << 20)))
    with pytest.raises(LabError, match="need a host image of 5[0-9] MiB or more, not 48"):
        build_host_image(tmp_path / "host.img", kernel=big, size_mib=48, guest_agent=AGENT)
    assert not (tmp_path / "host.img").exists()


def test_the_image_holds_the_guest_agent_its_libraries_and_loader_and_what_it_runs(tmp_path):
    built = build_host_image(tmp_path / "host.img", kernel=fake_kernel(tmp_path / "kernel"), size_mib=48,
                             guest_agent=AGENT)

    initramfs = read_newc(gzip.decompress(copied_out(built.path, "initrd.gz", tmp_path)))
    for path, data in AGENT.executables.items():
        assert initramfs[path].data == data and stat.S_IMODE(initramfs[path].mode) == 0o755, path
    for path, data in AGENT.files.items():
        assert initramfs[path].data == data and stat.S_IMODE(initramfs[path].mode) == 0o644, path
    for path, target in AGENT.links.items():
        assert stat.S_ISLNK(initramfs[path].mode) and initramfs[path].data == target.encode(), path
    assert initramfs["lib64/ld-linux-x86-64.so.2"].data.decode().lstrip("/") == LOADER  # the interpreter, linked
    scripts = host_init.guest_scripts()
    for path in ("usr/sbin/chpasswd", "sbin/shutdown", "etc/dpustack/guest-agent"):  # what qemu-ga runs
        assert initramfs[path].data.decode() == scripts[path] and stat.S_IMODE(initramfs[path].mode) == 0o755
    assert "::respawn:/etc/dpustack/guest-agent" in initramfs["etc/inittab"].data.decode().splitlines()
    assert "lib/modules/virtio_console.ko" in initramfs
    assert built.guest_agent_packages == AGENT.packages


def test_another_guest_agent_makes_another_image(tmp_path):
    kernel = fake_kernel(tmp_path / "kernel")
    first = build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=AGENT)
    relinked = dataclasses.replace(AGENT, links={**AGENT.links, GLIB: "libglib-2.0.so.0.7400.7"})

    again = build_host_image(tmp_path / "host.img", kernel=kernel, size_mib=48, guest_agent=relinked)

    assert not again.reused and again.image_id != first.image_id
