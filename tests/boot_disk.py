"""A tiny BIOS-bootable disk image for tests: FAT32 with SYSLINUX booting a kernel and an initramfs.

    make_boot_disk(tmp_path / "boot.img", kernel.bzimage, initramfs.path)

The disk is what a machine that boots from disk (SeaBIOS → the disk's boot
sector) needs, without an operating system to install: SYSLINUX loads the
kernel and initramfs from the FAT file system and talks on ttyS0 (115200).
Made with dosfstools, syslinux and mtools; a missing tool is an error
naming the Debian package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SIZE = "64M"
LABEL = "DPUSTACK"
KERNEL_ARGS = "console=ttyS0 quiet panic=-1"
SYSLINUX_CFG = f"""\
DEFAULT linux
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND {KERNEL_ARGS}
"""
_TOOLS = {"truncate": "coreutils", "mkfs.fat": "dosfstools", "syslinux": "syslinux", "mcopy": "mtools"}


def make_boot_disk(path: Path, kernel: Path, initramfs: Path) -> Path:
    """Write the raw disk image at ``path`` and return it."""
    missing = [f"{tool} ({package})" for tool, package in _TOOLS.items() if shutil.which(tool) is None]
    assert not missing, f"a boot disk needs {', '.join(missing)}: apt-get install {' '.join(set(_TOOLS.values()))}"
    staging = path.parent / f".{path.name}.files"
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel, staging / "vmlinuz")
    shutil.copyfile(initramfs, staging / "initrd.gz")
    (staging / "syslinux.cfg").write_text(SYSLINUX_CFG)
    path.unlink(missing_ok=True)
    for argv in (["truncate", "-s", SIZE, str(path)], ["mkfs.fat", "-F", "32", "-n", LABEL, str(path)],
                 ["syslinux", "--install", str(path)],
                 ["mcopy", "-i", str(path), *(str(staging / name) for name in ("vmlinuz", "initrd.gz", "syslinux.cfg")),
                  "::/"]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"`{' '.join(argv)}` failed: {done.stderr.strip()}"
    shutil.rmtree(staging)
    return path
