"""Debian programs for the lab guest's initramfs, with the shared libraries they need, from Debian packages.

    agent = qemu_guest_agent()            # Debian's qemu-ga; the first call fetches (seconds), later ones find it
    agent.executables, agent.files, agent.links     # guest path -> bytes / bytes / symlink target
    agent.packages                        # ('qemu-guest-agent=1:7.2+dfsg-7+deb12u18+b3', 'libc6=2.36-9+deb12u13', ...)

Where the libraries come from: the packages of apt's candidates, fetched
like the guest kernel (:mod:`dpustack.lab.debian_packages`: ``apt-get
download``, ``dpkg-deb -x``), never installed and never this machine's own
files. What the image holds is then what the Debian archive says the
program goes with, whatever is installed here (this machine need not have
liburing2 or libnuma1 at all, nor the same versions), and the image's id
can name the package versions it was made of.

How they are found (:func:`resolve`): as the loader would. The program's
``DT_NEEDED`` names (:mod:`dpustack.lab.elf_dynamic`, no ``ldd``: nothing is
run) are looked up, each in the loader's default directories
(:data:`LIBRARY_DIRS`) of the unpacked packages, and the libraries found
need theirs, until none is missing; the program's interpreter (PT_INTERP)
comes too. The packages searched grow only when a name is missing: first
the program's package's Depends, then, one package at a time in
breadth-first order, the Depends of those (libglib2.0-0 brings
libpcre2-8-0). Symlinks are kept as the package has them (``/lib64/ld-linux-x86-64.so.2``
-> ``/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2``), so each file is in
the guest once. A name no package has is a LabError.

The cache: ``<guest cache>/packages`` (beside the kernels of
:func:`dpustack.lab.guest_kernel.cache_dir`), one directory per package
version, and ``<package>.json``: the packages a program was resolved
against. apt is asked again once a day (one ``apt-cache show``); when it
names the versions recorded, nothing is fetched, else the program is
resolved again and the versions no record names any longer are removed.
When apt cannot answer, the recorded packages are used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dpustack.lab import debian_packages
from dpustack.lab.debian_packages import locked
from dpustack.lab.elf_dynamic import dynamic
from dpustack.lab.guest_kernel import RECHECK_AFTER, cache_dir
from dpustack.lab.state import LabError

QEMU_GUEST_AGENT = ("qemu-guest-agent", "usr/sbin/qemu-ga")  # package, program
#: where the loader looks without an ld.so.cache (Debian's multiarch directories first), in this order
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")
_MAX_LINKS = 40  # as the kernel's limit on symlinks in one lookup
_LOCK = ".lock"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuestProgram:
    """A program and what it needs to run in the guest, by path in the guest (no leading ``/``): files
    executable in their package (the program, the loader), other files, and symlinks."""

    program: str
    executables: dict[str, bytes]
    files: dict[str, bytes]
    links: dict[str, str]
    packages: tuple[str, ...] = ()  # name=version of each package searched, the program's first

    def paths(self) -> list[str]:
        return sorted([*self.executables, *self.files, *self.links])

    def digest(self) -> str:
        """A digest of everything the program puts into the guest."""
        digest = hashlib.sha256()
        for kind, members in (("x", self.executables), ("f", self.files),
                              ("l", {path: target.encode() for path, target in self.links.items()})):
            for path in sorted(members):
                digest.update(f"{kind}\0{path}\0{len(members[path])}\0".encode() + members[path])
        return digest.hexdigest()


def qemu_guest_agent(cache: Path | None = None, *, recheck_after: float = RECHECK_AFTER) -> GuestProgram:
    """Debian's QEMU guest agent (``usr/sbin/qemu-ga`` of package qemu-guest-agent) and its libraries."""
    package, program = QEMU_GUEST_AGENT
    return debian_program(package, program, cache, recheck_after=recheck_after)


# ------------------------------------------------------------- resolving
def resolve(program: str, trees: Sequence[Path], more: Callable[[], Path | None] = lambda: None) -> GuestProgram:
    """``program`` (a path in ``trees[0]``) and everything the loader needs to run it, found in ``trees``
    in order; ``more`` gives another tree to search when a library is in none (None: there is none)."""
    trees = list(trees)
    executables: dict[str, bytes] = {}
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}

    def take(tree: Path, path: str, *, executable: bool = False) -> bytes:
        real = _follow(tree, path, links)
        data = (tree / real).read_bytes()
        mode = (tree / real).stat().st_mode
        if executable or mode & stat.S_IXUSR:
            executables.setdefault(real, data)
        else:
            files.setdefault(real, data)
        return data

    def read(tree: Path, path: str) -> tuple[str, ...]:
        data = take(tree, path)
        try:
            return dynamic(data).needed
        except ValueError as exc:
            raise LabError(f"{path} of {tree} is not an ELF file the loader can read: {exc}",
                           field="packages") from exc

    program = program.strip("/")
    if not os.path.lexists(trees[0] / program):
        raise LabError(f"{trees[0]} has no {program}", field="packages")
    try:
        info = dynamic(take(trees[0], program, executable=True))
    except ValueError as exc:
        raise LabError(f"{program} is not an ELF file the loader can read: {exc}", field="packages") from exc
    if info.interpreter is not None:
        found = _locate_path(trees, info.interpreter.strip("/"))
        while found is None and (tree := more()) is not None:
            trees.append(tree)
            found = _locate_path(trees, info.interpreter.strip("/"))
        if found is None:
            raise LabError(f"no package searched has {program}'s loader {info.interpreter}", field="packages")
        take(*found, executable=True)
    pending, done = list(info.needed), set()
    while pending:
        name = pending.pop(0)
        if name in done:
            continue
        done.add(name)
        found = _locate_library(trees, name)
        while found is None and (tree := more()) is not None:
            trees.append(tree)
            found = _locate_library(trees, name)
        if found is None:
            raise LabError(f"no package searched has {name}, which {program} needs "
                           f"(searched: {', '.join(tree.name for tree in trees)})", field="packages")
        pending.extend(read(*found))
    return GuestProgram(program, executables, files, links)


def _locate_library(trees: Sequence[Path], name: str) -> tuple[Path, str] | None:
    if "/" in name:  # a path, not a name to look up
        return _locate_path(trees, name.strip("/"))
    for tree in trees:
        for directory in LIBRARY_DIRS:
            if os.path.lexists(tree / directory / name):
                return tree, f"{directory}/{name}"
    return None


def _locate_path(trees: Sequence[Path], path: str) -> tuple[Path, str] | None:
    return next(((tree, path) for tree in trees if os.path.lexists(tree / path)), None)


def _follow(tree: Path, path: str, links: dict[str, str]) -> str:
    """The path in ``tree`` of the file ``path`` names, its symlinks resolved inside the tree (an
    absolute target is from the tree's root) and recorded in ``links``."""
    parts, done, hops = path.strip("/").split("/"), [], 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = "/".join([*done, part])
        if (tree / here).is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise LabError(f"{path} in {tree}: too many symlinks", field="packages")
            target = os.readlink(tree / here)
            links[here] = target
            parts = target.split("/") + parts
            if target.startswith("/"):
                done = []
        else:
            done.append(part)
    real = "/".join(done)
    if not (tree / real).is_file():
        raise LabError(f"{path} in {tree} leads to {real or '/'}, which is no file there", field="packages")
    return real


# -------------------------------------------------------------- fetching
def debian_program(package: str, program: str, cache: Path | None = None, *,
                   recheck_after: float = RECHECK_AFTER) -> GuestProgram:
    """``program`` of Debian ``package`` (apt's candidate) resolved against the candidates of the packages
    it depends on, fetched into ``cache`` unless they are there (see the module's docstring)."""
    cache = Path(cache) if cache is not None else cache_dir() / "packages"
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / f"{package}.json"
    with locked(cache / _LOCK):
        recorded = _recorded(cache, record)
        if recorded and time.time() - record.stat().st_mtime < recheck_after:
            return _resolve_recorded(program, cache, recorded)
        try:
            if _still_current(recorded):
                os.utime(record)  # found current now
                return _resolve_recorded(program, cache, recorded)
            resolved = _fetch_and_resolve(package, program, cache)
        except LabError as exc:
            if not recorded:
                raise
            _log.warning("using the recorded packages of %s: %s", package, exc.message)
            return _resolve_recorded(program, cache, recorded)
        partial = record.with_name(f".{record.name}.partial")
        partial.write_text(json.dumps({"program": program, "packages": [p.split("=", 1) for p in
                                                                        resolved.packages]}) + "\n")
        partial.replace(record)
        _remove_unrecorded(cache)
        return resolved


def _fetch_and_resolve(package: str, program: str, cache: Path) -> GuestProgram:
    stanzas = debian_packages.candidates([package])
    if package not in stanzas:
        raise LabError(f"apt has no package {package}, even after apt-get update", field="packages")
    searched = [(package, stanzas[package]["Version"])]
    queue = debian_packages.depends(stanzas[package])
    seen = {package, *queue}

    def more() -> Path | None:
        """The next package of the dependency graph, breadth first; apt asked for a level's candidates at once."""
        while queue:
            if queue[0] not in stanzas:
                stanzas.update(debian_packages.candidates([name for name in queue if name not in stanzas]))
            name = queue.pop(0)
            stanza = stanzas.get(name)
            if stanza is None:  # a virtual package, or one this architecture lacks: nothing to search
                continue
            for dependency in debian_packages.depends(stanza):
                if dependency not in seen:
                    seen.add(dependency)
                    queue.append(dependency)
            searched.append((name, stanza["Version"]))
            return _entry(cache, name, stanza["Version"])
        return None

    resolved = resolve(program, [_entry(cache, package, searched[0][1])], more)
    used = _used(resolved, cache, searched)
    return GuestProgram(resolved.program, resolved.executables, resolved.files, resolved.links,
                        tuple(f"{name}={version}" for name, version in used))


def _used(resolved: GuestProgram, cache: Path, searched: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The searched packages that gave the guest something (the program's always): the others need not be
    kept or searched again."""
    paths = resolved.paths()
    used = [searched[0]]
    for name, version in searched[1:]:
        tree = cache / debian_packages.entry_name(name, version)
        if any(os.path.lexists(tree / path) for path in paths):
            used.append((name, version))
    return used


def _entry(cache: Path, package: str, version: str) -> Path:
    """The unpacked tree of ``package`` ``version``, fetched unless the cache has it."""
    entry = cache / debian_packages.entry_name(package, version)
    if not entry.is_dir():
        debian_packages.unpack(package, version, entry)
    return entry


def _recorded(cache: Path, record: Path) -> list[tuple[str, str]]:
    """The packages ``record`` names, if it can be read and each is in the cache; else none."""
    try:
        packages = [(str(name), str(version)) for name, version in json.loads(record.read_text())["packages"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    entries = [cache / debian_packages.entry_name(name, version) for name, version in packages]
    return packages if packages and all(entry.is_dir() for entry in entries) else []


def _still_current(recorded: list[tuple[str, str]]) -> bool:
    """Whether apt's candidates are the recorded versions still."""
    if not recorded:
        return False
    stanzas = debian_packages.candidates([name for name, _ in recorded])
    return {name: stanzas[name]["Version"] for name, _ in recorded if name in stanzas} == dict(recorded)


def _resolve_recorded(program: str, cache: Path, recorded: list[tuple[str, str]]) -> GuestProgram:
    trees = [cache / debian_packages.entry_name(name, version) for name, version in recorded]
    resolved = resolve(program, trees)
    return GuestProgram(resolved.program, resolved.executables, resolved.files, resolved.links,
                        tuple(f"{name}={version}" for name, version in recorded))


def _remove_unrecorded(cache: Path) -> None:
    """Remove the package directories no record names (older versions, packages that gave nothing)."""
    kept = set()
    for record in cache.glob("*.json"):
        kept.update(debian_packages.entry_name(name, version) for name, version in _recorded(cache, record))
    for entry in cache.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)
