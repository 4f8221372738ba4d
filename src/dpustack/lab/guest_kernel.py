"""The kernel lab guests boot: Debian's cloud kernel, fetched with apt and unpacked into a cache, never installed.

    kernel = guest_kernel()           # the first call fetches (a few seconds), later ones find it cached
    kernel.boot_image                 # what QEMU's -kernel takes: vmlinux when it could be had, else vmlinuz
    kernel.modules_dir                # lib/modules/<release>, for the guest's initramfs

* Which kernel: the package the metapackage ``linux-image-cloud-amd64``
  depends on in apt's candidate version (``apt-cache show``: a deb822
  stanza, the Packages file format), e.g.
  ``linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)``. No package lists yet
  (a fresh machine): ``apt-get update`` once, then again.
* Fetching: :mod:`dpustack.lab.debian_packages` (``apt-get download`` of
  that package and version, ``dpkg-deb -x`` into a directory of the cache
  renamed into place when complete), so a directory in the cache is
  always a whole kernel. The vmlinux is extracted when Python can decompress the bzImage's
  payload (:mod:`dpustack.lab.bzimage`; Debian 12's is lz4: it cannot).
* The cache: ``$DPUSTACK_GUEST_CACHE``, else ``$XDG_CACHE_HOME/dpustack/guest``
  (``~/.cache/dpustack/guest``), one directory per kernel package version
  (``linux-image-*``; what else is there, such as libvirt's capabilities or
  the guest's other packages, is left alone). A lock file makes parallel
  callers fetch once; a fetch removes the other kernels. apt is asked again once a day (each question costs about a
  second: apt parses its lists); in between, and whenever apt cannot say
  which kernel is current (no apt, no network for the update), the newest
  cached kernel is used.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dpustack.lab import bzimage, debian_packages
from dpustack.lab.debian_packages import locked
from dpustack.lab.state import LabError

METAPACKAGE = "linux-image-cloud-amd64"
CACHE_ENV = "DPUSTACK_GUEST_CACHE"
RECHECK_AFTER = 24 * 3600.0
_IMAGE_PREFIX = "linux-image-"
_LOCK = ".lock"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuestKernel:
    """One unpacked kernel package (in ``root``): its release (``uname -r``), images and modules."""

    root: Path
    release: str
    bzimage: Path
    vmlinux: Path | None
    modules_dir: Path

    @property
    def boot_image(self) -> Path:
        """The image to boot: the uncompressed vmlinux (faster under emulation) if there is one."""
        return self.vmlinux or self.bzimage


def cache_dir() -> Path:
    """Where fetched kernels are kept (see the module's docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpustack" / "guest"


def guest_kernel(cache: Path | None = None, *, metapackage: str = METAPACKAGE,
                 recheck_after: float = RECHECK_AFTER) -> GuestKernel:
    """The current kernel of ``metapackage``, fetched into ``cache`` unless it is there already;
    apt is not asked if the newest cached kernel was found current less than ``recheck_after`` s ago."""
    cache = Path(cache) if cache is not None else cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / _LOCK):
        newest = _newest_cached(cache)
        if newest is not None and time.time() - newest.root.stat().st_mtime < recheck_after:
            return newest
        try:
            package, version = current_kernel_package(metapackage)
            entry = cache / _entry_name(package, version)
            if not entry.is_dir():
                _fetch(package, version, entry)
                for other in _kernel_entries(cache):
                    if other != entry:
                        shutil.rmtree(other, ignore_errors=True)
            os.utime(entry)  # found current now
            return _kernel_in(entry, package.removeprefix(_IMAGE_PREFIX))
        except LabError as exc:
            if newest is None:
                raise
            _log.warning("using the cached guest kernel %s: %s", newest.release, exc.message)
            return newest


def current_kernel_package(metapackage: str = METAPACKAGE) -> tuple[str, str]:
    """``(package, version)`` of the kernel image ``metapackage`` depends on in apt's candidate."""
    stanza = debian_packages.candidates([metapackage], field="metapackage").get(metapackage)
    if stanza is None:
        raise LabError(f"apt has no package {metapackage}, even after apt-get update", field="metapackage")
    for dependency in (stanza.get("Depends") or "").split(","):
        name, _, constraint = dependency.split("|")[0].strip().partition(" ")
        if name.startswith(_IMAGE_PREFIX):
            version = constraint.strip("() ").removeprefix("=").strip()
            return name, version or stanza["Version"]
    raise LabError(f"{metapackage} {stanza.get('Version')} depends on no {_IMAGE_PREFIX}* package "
                   f"(Depends: {stanza.get('Depends')!r})", field="metapackage")


# -------------------------------------------------------------- fetching
def _fetch(package: str, version: str, entry: Path) -> None:
    """Download and unpack ``package`` ``version`` into ``entry`` (made whole or not at all), with the
    vmlinux beside the bzImage when it can be had."""
    release = package.removeprefix(_IMAGE_PREFIX)

    def add_vmlinux(root: Path) -> None:
        vmlinux = _vmlinux(_kernel_in(root, release).bzimage)
        if vmlinux is not None:
            (root / "boot" / f"vmlinux-{release}").write_bytes(vmlinux)

    debian_packages.unpack(package, version, entry, prepare=add_vmlinux, field="metapackage")


def _vmlinux(image_path: Path) -> bytes | None:
    try:
        return bzimage.extract_vmlinux(image_path.read_bytes())
    except ValueError:
        return None  # not a bzImage we can read: boot it as it is


def _kernel_in(root: Path, release: str) -> GuestKernel:
    bzimage_path = root / "boot" / f"vmlinuz-{release}"
    modules_dir = root / "lib" / "modules" / release
    if not bzimage_path.is_file() or not modules_dir.is_dir():
        raise LabError(f"{root} holds no kernel {release} (boot/vmlinuz-{release} and lib/modules/{release})",
                       field="metapackage")
    vmlinux = root / "boot" / f"vmlinux-{release}"
    return GuestKernel(root, release, bzimage_path, vmlinux if vmlinux.is_file() else None, modules_dir)


def _kernel_entries(cache: Path) -> list[Path]:
    """The cache's kernel directories (whole ones: partial fetches start with a dot)."""
    return [entry for entry in cache.iterdir() if entry.is_dir() and entry.name.startswith(_IMAGE_PREFIX)]


def _newest_cached(cache: Path) -> GuestKernel | None:
    entries = sorted(_kernel_entries(cache), key=lambda entry: entry.stat().st_mtime)
    for entry in reversed(entries):
        package = entry.name.partition("_")[0]
        try:
            return _kernel_in(entry, package.removeprefix(_IMAGE_PREFIX))
        except LabError:
            continue
    return None


def _entry_name(package: str, version: str) -> str:
    return debian_packages.entry_name(package, version)
