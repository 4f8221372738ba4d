"""QEMU guests for integration tests: a lab guest kernel and initramfs booted under TCG.

    run = boot_guest(kernel.boot_image, initramfs.path, workdir=tmp_path, vhost_user_blk=[socket])
    assert "RESULT ok" in run.console

KVM cannot run a Linux guest on these machines (docs: LAB-FACTS), so the
guest is emulated (``-accel tcg``). Its memory is a shared memfd, which a
vhost-user back end (qemu-storage-daemon's vhost-user-blk export) needs to
map the guest's rings and buffers; without it the disk appears but every
request fails. Each socket in ``vhost_user_blk`` becomes a virtio-blk disk
(``/dev/vda``, ``/dev/vdb``… in order). The serial console is written to a
file; the guest is expected to power itself off, and is killed by PID if it
has not within ``timeout``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "/usr/bin/qemu-system-x86_64"
KERNEL_ARGS = "console=ttyS0 quiet panic=-1"


@dataclass(frozen=True)
class GuestRun:
    """How a guest ended: its console output, QEMU's exit status, seconds from launch to exit."""

    console: str
    returncode: int
    seconds: float


def qemu_argv(kernel: Path, initramfs: Path, console: Path, *, vhost_user_blk: list[Path],
              memory_mib: int = 128) -> list[str]:
    argv = [QEMU, "-accel", "tcg", "-machine", "q35,memory-backend=mem", "-cpu", "max", "-smp", "1",
            "-m", f"{memory_mib}M", "-object", f"memory-backend-memfd,id=mem,size={memory_mib}M,share=on",
            "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initramfs),
            "-append", KERNEL_ARGS]
    for n, socket in enumerate(vhost_user_blk):
        argv += ["-chardev", f"socket,id=vblk{n},path={socket}",
                 "-device", f"vhost-user-blk-pci,chardev=vblk{n},num-queues=1"]
    return argv


def boot_guest(kernel: Path, initramfs: Path, *, workdir: Path, vhost_user_blk: list[Path] = (),
               memory_mib: int = 128, timeout: float = 20.0) -> GuestRun:
    """Run the guest until it powers off; AssertionError with its console and QEMU's log if it does not
    within ``timeout`` seconds (it is killed then)."""
    console, log = workdir / "console.log", workdir / "qemu.log"
    argv = qemu_argv(kernel, initramfs, console, vhost_user_blk=list(vhost_user_blk), memory_mib=memory_mib)
    started = time.monotonic()
    with log.open("wb") as output:
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        returncode = qemu.wait(timeout)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        if qemu.poll() is None:
            os.kill(qemu.pid, signal.SIGKILL)
            qemu.wait(5)
    seconds = time.monotonic() - started
    text = console.read_text(errors="replace") if console.exists() else ""
    assert returncode is not None, (f"the guest did not power off within {timeout:g} s; console:\n{text[-3000:]}\n"
                                    f"qemu:\n{log.read_text(errors='replace')[-2000:]}")
    return GuestRun(text, returncode, seconds)
