"""A lab guest's whole user space: a busybox-static initramfs (gzip'ed newc cpio) with an ``/init`` of the caller's.

    init = init_script('echo hello; poweroff -f')
    built = build_initramfs(Path("guest.cpio.gz"), init, modules=KernelModules(kernel.modules_dir),
                            load=["virtio_pci", "virtio_blk"])

What is in it:

* ``/bin/busybox`` (Debian's busybox-static) and a symlink for each of its
  applets where busybox would install it (``/bin/sh``, ``/sbin/insmod``, …);
* ``/init``, the caller's script, executable; :func:`init_script` puts
  :data:`INIT_PRELUDE` in front of a script body: it mounts ``/proc``,
  ``/sys`` and devtmpfs on ``/dev`` and loads the modules;
* the modules named in ``load`` and every module they depend on, as
  ``/lib/modules/<name>.ko``, and ``/lib/modules/load-order``: their paths
  in load order (dependencies first), one a line;
* the caller's ``files`` (mode 0644), ``scripts`` (mode 0755: scripts or
  programs) and ``links`` (symlinks), e.g. a udhcpc script, ``/etc/hosts``,
  a Debian program with its libraries (:mod:`dpustack.lab.guest_programs`);
* ``/dev/console``, so the kernel can give ``/init`` its console before
  devtmpfs is mounted, and empty ``/proc``, ``/sys``, ``/tmp``, ``/run``.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dpustack.lab.cpio_archive import CpioArchive
from dpustack.lab.elf_dynamic import dynamic, is_elf64
from dpustack.lab.kernel_modules import KernelModules
from dpustack.lab.state import LabError

BUSYBOX = Path("/usr/bin/busybox")
MODULE_LIST = "lib/modules/load-order"
MODULE_DIR = "lib/modules"

#: mounts the kernel's file systems and loads the initramfs' modules in order; a module that fails is
#: reported on the console and the rest still loaded, so the script's own checks say what is missing
INIT_PRELUDE = f"""\
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do
    insmod "$module" || echo "init: cannot load $module"
done < /{MODULE_LIST}
"""


@dataclass(frozen=True)
class Initramfs:
    """A built initramfs: where it is and the modules ``/init`` loads, in order."""

    path: Path
    modules: tuple[str, ...]


def init_script(body: str) -> str:
    """An ``/init``: :data:`INIT_PRELUDE`, then ``body``."""
    return INIT_PRELUDE + body.strip("\n") + "\n"


def build_initramfs(path: Path, init: str, *, modules: KernelModules | None = None, load: Iterable[str] = (),
                    files: Mapping[str, bytes] | None = None, scripts: Mapping[str, str | bytes] | None = None,
                    links: Mapping[str, str] | None = None, busybox: Path = BUSYBOX) -> Initramfs:
    """Write the initramfs to ``path`` (replaced whole, never half written) and say what it holds."""
    load = list(load)
    if load and modules is None:
        raise LabError("modules to load need the kernel's module directory", field="modules")
    archive = CpioArchive()
    for directory in ("dev", "proc", "sys", "tmp", "run", "etc", MODULE_DIR):
        archive.directory(directory)
    archive.device("dev/console", major=5, minor=1)
    _add_busybox(archive, busybox)
    archive.file("init", init.encode(), mode=0o755)
    order: list[str] = []
    if modules is not None:
        order = modules.load_order(load)
        for name in order:
            archive.file(f"{MODULE_DIR}/{name}.ko", modules.object_code(name))
    archive.file(MODULE_LIST, "".join(f"/{MODULE_DIR}/{name}.ko\n" for name in order).encode())
    for field, members, mode in (("files", files, 0o644), ("scripts", scripts, 0o755)):
        for name, content in (members or {}).items():
            try:
                archive.file(name, content if isinstance(content, bytes) else content.encode(), mode=mode)
            except ValueError as exc:
                raise LabError(f"cannot put {name!r} in the initramfs: {exc}", field=field) from exc
    for name, target in (links or {}).items():
        try:
            archive.symlink(name, target)
        except ValueError as exc:
            raise LabError(f"cannot put the link {name!r} in the initramfs: {exc}", field="links") from exc
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(gzip.compress(archive.to_bytes(), compresslevel=9, mtime=0))
    partial.replace(path)
    return Initramfs(path, tuple(order))


def _add_busybox(archive: CpioArchive, busybox: Path) -> None:
    """``bin/busybox`` and a symlink to it for every applet, at the path busybox lists for it."""
    try:
        binary = busybox.read_bytes()
    except OSError as exc:
        raise LabError(f"cannot read {busybox} (apt-get install busybox-static): {exc.strerror}",
                       field="busybox") from exc
    if _needs_loader(binary):
        raise LabError(f"{busybox} is not a static x86-64 executable; a guest has no libraries for it "
                       f"(apt-get install busybox-static)", field="busybox")
    try:
        listed = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True,
                                timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"{busybox} --list-full failed: {exc}", field="busybox") from exc
    archive.file("bin/busybox", binary, mode=0o755)
    for applet in listed:
        if applet != "bin/busybox":
            archive.symlink(applet, "/bin/busybox")


def _needs_loader(elf: bytes) -> bool:
    """Whether an ELF64 executable names a program interpreter (is dynamically linked)."""
    if not is_elf64(elf):
        return True  # not something a guest can run either
    try:
        return dynamic(elf).interpreter is not None
    except ValueError:
        return True
