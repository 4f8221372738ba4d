"""Debian packages for lab guests, fetched with apt and unpacked into a cache, never installed.

    stanzas = candidates(["qemu-guest-agent", "libc6"])   # apt's candidate control stanza of each known one
    unpack("qemu-guest-agent", stanzas["qemu-guest-agent"]["Version"], cache / "qemu-guest-agent_...")
    depends(stanzas["qemu-guest-agent"])                   # ['libc6', 'libglib2.0-0', ...]

* The candidate: ``apt-cache show --no-all-versions`` (deb822 stanzas, the
  Packages file format). No package lists yet (a fresh machine): ``apt-get
  update`` once, then again.
* Fetching: ``apt-get download`` of a package and version (once more after
  an ``apt-get update`` when the mirror no longer has it) and ``dpkg-deb
  -x`` into a new directory beside the entry, renamed onto it when
  complete, so an entry is always a whole package.
* Every apt or dpkg tool is run by argv, in the C locale, bounded by
  :data:`APT_TIMEOUT`; a failure is a LabError saying what apt said.
  :func:`locked` serializes parallel callers of one cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from email.parser import HeaderParser
from pathlib import Path

from dpustack.lab.state import LabError

APT_TIMEOUT = 300.0


def candidates(packages: Iterable[str], *, field: str = "packages") -> dict[str, dict[str, str]]:
    """The candidate's control stanza of each of ``packages`` apt knows (one apt-cache call); if it knows
    none of them, the lists are updated first and apt asked again."""
    packages = list(packages)
    found = _show(packages, field)
    if packages and not found:
        _apt_update(f"apt has no package {', '.join(packages)}", field=field)
        found = _show(packages, field)
    return found


def depends(stanza: dict[str, str]) -> list[str]:
    """The packages a stanza's Depends and Pre-Depends name: the first of each set of alternatives,
    without version or architecture qualifiers."""
    names = []
    for key in ("Pre-Depends", "Depends"):
        for dependency in (stanza.get(key) or "").split(","):
            name = dependency.split("|")[0].strip().partition(" ")[0].partition(":")[0]
            if name and name not in names:
                names.append(name)
    return names


def entry_name(package: str, version: str) -> str:
    """The cache directory's name of one package version (an epoch's ``:`` escaped as apt does)."""
    return f"{package}_{version.replace(':', '%3a')}"


def unpack(package: str, version: str, entry: Path, *, prepare: Callable[[Path], None] | None = None,
           field: str = "packages") -> None:
    """Download ``package`` ``version`` and unpack it into ``entry`` (made whole or not at all);
    ``prepare`` may add to the unpacked tree before it is renamed into place."""
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=entry.parent))
    try:
        deb = _download(package, version, work, field)
        root = work / "root"
        run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}", field=field)
        if prepare is not None:
            prepare(root)
        root.rename(entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(package: str, version: str, directory: Path, field: str) -> Path:
    argv = ["apt-get", "download", "-q", f"{package}={version}"]
    done = _apt(argv, cwd=directory, field=field)
    if done.returncode != 0:  # the lists name a version the mirror has dropped since
        _apt_update(f"apt-get download {package}={version} failed: {tail(done.stderr)}", field=field)
        done = _apt(argv, cwd=directory, field=field)
        if done.returncode != 0:
            raise LabError(f"apt-get download {package}={version} failed: {tail(done.stderr)}", field=field)
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise LabError(f"apt-get download {package}={version} left {len(debs)} .deb files", field=field)
    return debs[0]


def _show(packages: list[str], field: str) -> dict[str, dict[str, str]]:
    """Stanzas by package name; apt fails the whole call for one unknown name, so those it printed count."""
    if not packages:
        return {}
    done = _apt(["apt-cache", "show", "--no-all-versions", *packages], field=field)
    found: dict[str, dict[str, str]] = {}
    for text in done.stdout.strip().split("\n\n"):
        if text.strip():
            stanza = dict(HeaderParser().parsestr(text.strip()).items())
            if stanza.get("Package") in packages:
                found.setdefault(stanza["Package"], stanza)
    return found


def _apt_update(why: str, *, field: str) -> None:
    done = _apt(["apt-get", "update", "-q"], field=field)
    if done.returncode != 0:
        raise LabError(f"{why}; apt-get update failed too (root and the Debian mirror are needed): "
                       f"{tail(done.stderr)}", field=field)


def run(argv: list[str], what: str, *, field: str = "packages") -> None:
    """Run an apt or dpkg tool; LabError saying what failed and the end of its message."""
    done = _apt(argv, field=field)
    if done.returncode != 0:
        raise LabError(f"{what} failed: {tail(done.stderr)}", field=field)


def _apt(argv: list[str], cwd: Path | None = None, *, field: str = "packages") -> subprocess.CompletedProcess[str]:
    """Run an apt or dpkg tool; LabError if it cannot be run or hangs."""
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"cannot run {argv[0]} (a Debian machine is needed to fetch guest packages): {exc}",
                       field=field) from exc


def tail(text: str, lines: int = 5) -> str:
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
