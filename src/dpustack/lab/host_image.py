"""The lab host image: the boot disk lab bare-metal hosts (QEMU guests) boot from, built from Debian packages.

    image = build_host_image(lab_dir / "host.img")     # built once, re-used while nothing changed
    image.path, image.image_id                         # the boot step line reports image_id

What it is: a raw disk holding one FAT32 file system on the whole disk (a
"superfloppy", no partition table), labelled DPUSTACK, made bootable by
syslinux: SeaBIOS loads its boot sector, syslinux loads ``/vmlinuz`` (the
guest kernel's bzImage as it is, :func:`dpustack.lab.guest_kernel.guest_kernel`)
and ``/initrd.gz`` (busybox, the init of :mod:`dpustack.lab.host_init`, and
Debian's QEMU guest agent with its libraries and loader,
:func:`dpustack.lab.guest_programs.qemu_guest_agent`), and prints on the
first serial port. ``/dpustack-image`` holds the image's
id.

Made with mkfs.fat (Debian package dosfstools), syslinux (syslinux) and
mcopy (mtools), run by argv; only their exit status is looked at. The
image is written next to ``path`` and renamed onto it, so ``path`` is
always a whole image. ``<path>.id`` records the id of the image at
``path``: the kernel release, a digest of the init (and busybox, and the
guest agent's files) and the size. A build whose id is recorded there re-uses the image; the record is
removed before an image is replaced and written after, so it never names
an image that is not there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dpustack.lab import host_init
from dpustack.lab.guest_initramfs import BUSYBOX, build_initramfs, init_script
from dpustack.lab.debian_packages import locked
from dpustack.lab.guest_kernel import GuestKernel, guest_kernel
from dpustack.lab.guest_programs import GuestProgram, qemu_guest_agent
from dpustack.lab.kernel_modules import KernelModules
from dpustack.lab.state import LabError

KERNEL_ARGS = "console=ttyS0 quiet panic=-1"
SYSLINUX_CFG = f"""DEFAULT linux
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND {KERNEL_ARGS}
"""
ID_FILE = "dpustack-image"
MIN_SIZE_MIB = 48  # FAT32 needs 65525 clusters (33 MiB of 512-byte ones), the kernel 14 MiB
TOOLS = {"mkfs.fat": "dosfstools", "syslinux": "syslinux", "mcopy": "mtools"}  # tool: its Debian package
SBIN = ("/usr/sbin", "/sbin")  # where mkfs.fat is, often not on a user's PATH
TOOL_TIMEOUT = 120.0
_MiB = 1 << 20


@dataclass(frozen=True)
class HostImage:
    """A built image: where, its id (kernel release and init digest), the kernel in it, whether this call
    found it built already, and the Debian packages the guest agent came from (``name=version``)."""

    path: Path
    image_id: str
    kernel_release: str
    reused: bool
    guest_agent_packages: tuple[str, ...] = ()


def build_host_image(path: Path, *, kernel: GuestKernel | None = None, size_mib: int = 64,
                     guest_agent: GuestProgram | None = None) -> HostImage:
    """The host image at ``path``: re-used if its id is recorded there, else built (``kernel``: the
    current guest kernel when None; ``guest_agent``: Debian's current qemu-ga when None)."""
    if size_mib < MIN_SIZE_MIB:
        raise LabError(f"a host image needs at least {MIN_SIZE_MIB} MiB, not {size_mib}", field="size_mib")
    tools = {name: _tool(name) for name in TOOLS}
    kernel = kernel or guest_kernel()
    guest_agent = guest_agent or qemu_guest_agent()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_id = _image_id(kernel, size_mib, guest_agent)
    record = path.with_name(path.name + ".id")
    with locked(path.with_name(f".{path.name}.lock")):
        if path.is_file() and record.is_file() and record.read_text().strip() == image_id:
            return HostImage(path, image_id, kernel.release, True, guest_agent.packages)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=path.parent) as work:
            partial = Path(work) / "image"
            _build(partial, Path(work), tools, kernel, guest_agent, image_id, size_mib)
            record.unlink(missing_ok=True)
            partial.replace(path)
        record_partial = record.with_name(f".{record.name}.partial")
        record_partial.write_text(image_id + "\n")
        record_partial.replace(record)
    return HostImage(path, image_id, kernel.release, False, guest_agent.packages)


def _build(image: Path, work: Path, tools: dict[str, str], kernel: GuestKernel, guest_agent: GuestProgram,
           image_id: str, size_mib: int) -> None:
    contents = work / "contents"
    contents.mkdir()
    shutil.copyfile(kernel.bzimage, contents / "vmlinuz")
    build_initramfs(contents / "initrd.gz", init_script(host_init.INIT_BODY),
                    modules=KernelModules(kernel.modules_dir), load=host_init.MODULES,
                    files={**guest_agent.files, **host_init.guest_files()},
                    scripts={**guest_agent.executables, **host_init.guest_scripts()}, links=guest_agent.links)
    (contents / "syslinux.cfg").write_text(SYSLINUX_CFG)
    (contents / ID_FILE).write_text(image_id + "\n")
    members = [contents / name for name in ("vmlinuz", "initrd.gz", "syslinux.cfg", ID_FILE)]
    needed = sum(member.stat().st_size for member in members) + 4 * _MiB  # FATs, syslinux, slack
    if needed > size_mib * _MiB:
        raise LabError(f"the kernel and initramfs need a host image of {needed // _MiB + 1} MiB or more, "
                       f"not {size_mib}", field="size_mib")
    with image.open("wb") as handle:
        handle.truncate(size_mib * _MiB)
    _run([tools["mkfs.fat"], "-F", "32", "-n", host_init.LABEL, "-i", _volume_id(image_id), str(image)],
         "mkfs.fat")
    _run([tools["syslinux"], "--install", str(image)], "syslinux")
    _run([tools["mcopy"], "-i", str(image), *map(str, members), "::/"], "mcopy")


def _image_id(kernel: GuestKernel, size_mib: int, guest_agent: GuestProgram) -> str:
    digest = hashlib.sha256(f"{kernel.release}\0{size_mib}\0{host_init.content_hash()}\0{SYSLINUX_CFG}\0"
                            f"{guest_agent.digest()}\0".encode())
    digest.update(hashlib.sha256(BUSYBOX.read_bytes()).digest() if BUSYBOX.is_file() else b"")
    return f"{kernel.release}-{digest.hexdigest()[:16]}"


def _volume_id(image_id: str) -> str:
    """The FAT volume id (8 hex digits): derived from the image's id, not from the clock."""
    return hashlib.sha256(image_id.encode()).hexdigest()[:8]


def _tool(name: str) -> str:
    """The path of tool ``name``; LabError naming its Debian package if it is not installed."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN]))
    if found is None:
        raise LabError(f"{name} is missing: building the lab host image needs the Debian package "
                       f"{TOOLS[name]} (apt-get install {' '.join(TOOLS.values())})", field="tools")
    return found


def _run(argv: list[str], what: str) -> None:
    env = {**os.environ, "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{what} could not run: {exc}", field="tools") from exc
    if done.returncode != 0:
        tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:]) or "no message"
        raise LabError(f"{what} failed (exit {done.returncode}) building the host image: {tail}", field="tools")
