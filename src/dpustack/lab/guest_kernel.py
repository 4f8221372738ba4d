"""The kernel lab guests boot: Debian's cloud kernel, fetched with apt and unpacked into a cache, never installed.

    kernel = guest_kernel()           # the first call fetches (a few seconds), later ones find it cached
    kernel.boot_image                 # what QEMU's -kernel takes: vmlinux when it could be had, else vmlinuz
    kernel.modules_dir                # lib/modules/<release>, for the guest's initramfs

* Which kernel: the package the metapackage ``linux-image-cloud-amd64``
  depends on in apt's candidate version (``apt-cache show``: a deb822
  stanza, the Packages file format), e.g.
  ``linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)``. No package lists yet
  (a fresh machine): ``apt-get update`` once, then again.
* Fetching: ``apt-get download`` of that package and version (once more
  after an ``apt-get update`` when the mirror no longer has it) and
  ``dpkg-deb -x`` into a new directory of the cache, renamed into place
  when complete, so a directory in the cache is always a whole kernel.
  The vmlinux is extracted when Python can decompress the bzImage's
  payload (:mod:`dpustack.lab.bzimage`; Debian 12's is lz4: it cannot).
* The cache: ``$DPUSTACK_GUEST_CACHE``, else ``$XDG_CACHE_HOME/dpustack/guest``
  (``~/.cache/dpustack/guest``), one directory per package version. A lock
  file makes parallel callers fetch once; a fetch removes the other
  versions. apt is asked again once a day (each question costs about a
  second: apt parses its lists); in between, and whenever apt cannot say
  which kernel is current (no apt, no network for the update), the newest
  cached kernel is used.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from dpustack.lab import bzimage
from dpustack.lab.state import LabError

METAPACKAGE = "linux-image-cloud-amd64"
CACHE_ENV = "DPUSTACK_GUEST_CACHE"
APT_TIMEOUT = 300.0
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
                for other in cache.iterdir():
                    if other.is_dir() and other != entry:
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
    stanza = _apt_show(metapackage)
    if stanza is None:
        _apt_update(f"apt has no package {metapackage}")
        stanza = _apt_show(metapackage)
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
    """Download and unpack ``package`` ``version`` into ``entry`` (made whole or not at all)."""
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=entry.parent))
    try:
        deb = _download(package, version, work)
        root = work / "root"
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
        release = package.removeprefix(_IMAGE_PREFIX)
        kernel = _kernel_in(root, release)
        vmlinux = _vmlinux(kernel.bzimage)
        if vmlinux is not None:
            (root / "boot" / f"vmlinux-{release}").write_bytes(vmlinux)
        root.rename(entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(package: str, version: str, directory: Path) -> Path:
    argv = ["apt-get", "download", "-q", f"{package}={version}"]
    done = _apt(argv, cwd=directory)
    if done.returncode != 0:  # the lists name a version the mirror has dropped since
        _apt_update(f"apt-get download {package}={version} failed: {_tail(done.stderr)}")
        done = _apt(argv, cwd=directory)
        if done.returncode != 0:
            raise LabError(f"apt-get download {package}={version} failed: {_tail(done.stderr)}",
                           field="metapackage")
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise LabError(f"apt-get download {package}={version} left {len(debs)} .deb files", field="metapackage")
    return debs[0]


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


def _newest_cached(cache: Path) -> GuestKernel | None:
    entries = sorted((entry for entry in cache.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
                     key=lambda entry: entry.stat().st_mtime)
    for entry in reversed(entries):
        package = entry.name.partition("_")[0]
        try:
            return _kernel_in(entry, package.removeprefix(_IMAGE_PREFIX))
        except LabError:
            continue
    return None


def _entry_name(package: str, version: str) -> str:
    return f"{package}_{version.replace(':', '%3a')}"


# -------------------------------------------------------------------- apt
def _apt_show(package: str) -> dict[str, str] | None:
    """The candidate's control stanza, None if apt knows no such package."""
    done = _apt(["apt-cache", "show", "--no-all-versions", package])
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return dict(HeaderParser().parsestr(done.stdout.strip().split("\n\n")[0]).items())


def _apt_update(why: str) -> None:
    done = _apt(["apt-get", "update", "-q"])
    if done.returncode != 0:
        raise LabError(f"{why}; apt-get update failed too (root and the Debian mirror are needed): "
                       f"{_tail(done.stderr)}", field="metapackage")


def _run(argv: list[str], what: str) -> None:
    done = _apt(argv)
    if done.returncode != 0:
        raise LabError(f"{what} failed: {_tail(done.stderr)}", field="metapackage")


def _apt(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run an apt or dpkg tool; LabError if it cannot be run or hangs."""
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"cannot run {argv[0]} (a Debian machine is needed to fetch guest kernels): {exc}",
                       field="metapackage") from exc


def _tail(text: str, lines: int = 5) -> str:
    """The last error lines, without apt's warning about downloading as root outside its sandbox."""
    kept = [line for line in text.strip().splitlines() if "unsandboxed" not in line]
    return " / ".join(kept[-lines:]) or "(no message)"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (made if missing) for the block: parallel builders build once."""
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
