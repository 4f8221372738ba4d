"""A Debian program for the guest and the libraries it needs: found as the loader would find them in unpacked
packages (made here byte by byte), the packages fetched breadth first only while a library is missing, and
cached.

apt is replaced by a fake that answers ``apt-cache show`` (several packages at once) and ``apt-get download``
(with .deb files built here by ``dpkg-deb --build``); ``dpkg-deb -x`` is the real one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dpustack.lab import debian_packages
from dpustack.lab.guest_programs import GuestProgram, debian_program, resolve
from dpustack.lab.state import LabError

from .elf_files import elf_object

LOADER = "/lib64/ld-linux-x86-64.so.2"
MULTIARCH = "lib/x86_64-linux-gnu"
USR_MULTIARCH = "usr/lib/x86_64-linux-gnu"
PROGRAM = elf_object(needed=["libfoo.so.1", "libc.so.6"], interpreter=LOADER)
LIBC = elf_object(needed=["ld-linux-x86-64.so.2"], soname="libc.so.6", interpreter=LOADER)
LD_SO = elf_object(soname="ld-linux-x86-64.so.2")
LIBFOO = elf_object(needed=["libbar.so.0", "libc.so.6"], soname="libfoo.so.1")
LIBBAR = elf_object(needed=["libc.so.6"], soname="libbar.so.0")

#: package: (Depends, {path: bytes (mode 0644), (bytes, mode), or "-> target" (a symlink)})
PACKAGES = {
    "prog": ("libc6 (>= 2.34), libfoo1 | libfoo-alt, virtual-thing:any", {"usr/sbin/prog": (PROGRAM, 0o755)}),
    "libc6": ("libgcc-s1", {f"{MULTIARCH}/libc.so.6": (LIBC, 0o755),
                            f"{MULTIARCH}/ld-linux-x86-64.so.2": (LD_SO, 0o755),
                            "lib64/ld-linux-x86-64.so.2": f"-> /{MULTIARCH}/ld-linux-x86-64.so.2"}),
    "libgcc-s1": ("libc6", {f"{MULTIARCH}/libgcc_s.so.1": elf_object(soname="libgcc_s.so.1")}),
    "libfoo1": ("libbar0, libc6 (>= 2.14)", {f"{USR_MULTIARCH}/libfoo.so.1": "-> libfoo.so.1.2.3",
                                             f"{USR_MULTIARCH}/libfoo.so.1.2.3": LIBFOO}),
    "libbar0": ("libc6", {f"{USR_MULTIARCH}/libbar.so.0": LIBBAR}),
}
RESOLVED = {
    "executables": {"usr/sbin/prog": PROGRAM, f"{MULTIARCH}/ld-linux-x86-64.so.2": LD_SO,
                    f"{MULTIARCH}/libc.so.6": LIBC},
    "files": {f"{USR_MULTIARCH}/libfoo.so.1.2.3": LIBFOO, f"{USR_MULTIARCH}/libbar.so.0": LIBBAR},
    "links": {"lib64/ld-linux-x86-64.so.2": f"/{MULTIARCH}/ld-linux-x86-64.so.2",
              f"{USR_MULTIARCH}/libfoo.so.1": "libfoo.so.1.2.3"},
}


def make_tree(root: Path, members: dict) -> Path:
    for path, member in members.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(member, str):
            target.symlink_to(member.removeprefix("-> "))
        else:
            data, mode = member if isinstance(member, tuple) else (member, 0o644)
            target.write_bytes(data)
            target.chmod(mode)
    return root


class FakeApt:
    """apt's answers from :data:`PACKAGES` (``versions`` says each one's candidate) and what it was asked."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.packages = dict(PACKAGES)
        self.versions = {name: "1.0-1" for name in PACKAGES}
        self.works = True
        self.calls: list[str] = []

    def __call__(self, argv: list[str], cwd: Path | None = None, **_: str) -> subprocess.CompletedProcess[str]:
        if argv[0] == "dpkg-deb":
            return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        if not self.works:
            raise LabError(f"cannot run {argv[0]}", field="packages")
        if argv[:2] == ["apt-cache", "show"]:
            names = argv[3:]
            self.calls.append("show " + " ".join(names))
            stanzas = [f"Package: {name}\nVersion: {self.versions[name]}\nDepends: {self.packages[name][0]}\n"
                       for name in names if name in self.packages]
            return subprocess.CompletedProcess(argv, 0 if len(stanzas) == len(names) else 100, "\n".join(stanzas),
                                               "" if len(stanzas) == len(names) else "E: No packages found")
        if argv[:2] == ["apt-get", "download"]:
            name, version = argv[-1].split("=")
            assert version == self.versions[name]
            self.calls.append(f"download {name}")
            tree = make_tree(self.workdir / f"{name}-{version}-{len(self.calls)}", self.packages[name][1])
            (tree / "DEBIAN").mkdir()
            (tree / "DEBIAN/control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
                                                 f"Maintainer: test <test@example.org>\nDescription: a test\n")
            subprocess.run(["dpkg-deb", "--build", "-Znone", "--root-owner-group", str(tree),
                            str(Path(cwd) / f"{name}_{version}_amd64.deb")], check=True, capture_output=True)
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def apt(tmp_path, monkeypatch) -> FakeApt:
    fake = FakeApt(tmp_path / "apt")
    monkeypatch.setattr(debian_packages, "_apt", fake)
    return fake


def as_dicts(program: GuestProgram) -> dict:
    return {"executables": program.executables, "files": program.files, "links": program.links}


# ------------------------------------------------------------- resolving
def test_a_program_comes_with_its_loader_and_every_library_it_needs_each_once(tmp_path):
    trees = [make_tree(tmp_path / name, PACKAGES[name][1]) for name in ("prog", "libc6", "libfoo1", "libbar0")]

    resolved = resolve("/usr/sbin/prog", trees)

    assert as_dicts(resolved) == RESOLVED and resolved.program == "usr/sbin/prog"
    assert resolved.paths() == sorted([*RESOLVED["executables"], *RESOLVED["files"], *RESOLVED["links"]])


def test_more_packages_are_searched_only_while_a_library_is_missing(tmp_path):
    offered = [make_tree(tmp_path / name, PACKAGES[name][1]) for name in ("libc6", "libfoo1", "libbar0", "libgcc-s1")]
    asked = []

    def more() -> Path | None:
        asked.append(offered[len(asked)].name)
        return offered[len(asked) - 1]

    resolved = resolve("usr/sbin/prog", [make_tree(tmp_path / "prog", PACKAGES["prog"][1])], more)

    assert as_dicts(resolved) == RESOLVED
    assert asked == ["libc6", "libfoo1", "libbar0"]  # libgcc-s1 was never needed


def test_the_first_tree_holding_a_name_wins_in_the_loaders_directory_order(tmp_path):
    mine = elf_object(soname="libbar.so.0", needed=["libc.so.6"])
    trees = [make_tree(tmp_path / name, PACKAGES[name][1]) for name in ("prog", "libc6", "libfoo1")]
    trees.append(make_tree(tmp_path / "other", {"usr/lib/libbar.so.0": elf_object(soname="libbar.so.0"),
                                                f"{MULTIARCH}/libbar.so.0": mine}))
    trees.append(make_tree(tmp_path / "libbar0", PACKAGES["libbar0"][1]))

    resolved = resolve("usr/sbin/prog", trees)

    assert resolved.files[f"{MULTIARCH}/libbar.so.0"] == mine and f"{USR_MULTIARCH}/libbar.so.0" not in resolved.files


def test_a_library_no_package_has_is_named(tmp_path):
    trees = [make_tree(tmp_path / name, PACKAGES[name][1]) for name in ("prog", "libc6", "libfoo1")]
    with pytest.raises(LabError, match=r"no package searched has libbar.so.0, which usr/sbin/prog needs "
                                       r"\(searched: prog, libc6, libfoo1\)"):
        resolve("usr/sbin/prog", trees)
    with pytest.raises(LabError, match=f"no package searched has usr/sbin/prog's loader {LOADER}"):
        resolve("usr/sbin/prog", trees[:1])


@pytest.mark.parametrize("members, message", [
    ({"usr/sbin/prog": "-> prog"}, "too many symlinks"),
    ({"usr/sbin/prog": "-> ../../gone/prog"}, "leads to gone/prog, which is no file there"),
    ({"usr/sbin/prog": "-> /etc/hostname"}, "leads to etc/hostname, which is no file there"),  # not this machine's
    ({"usr/sbin/prog": b"#!/bin/sh\n"}, "usr/sbin/prog is not an ELF file the loader can read"),
    ({}, "has no usr/sbin/prog"),
])
def test_what_cannot_be_run_is_refused(tmp_path, members, message):
    with pytest.raises(LabError, match=message):
        resolve("usr/sbin/prog", [make_tree(tmp_path / "prog", members)])


def test_the_digest_follows_every_file_and_link(tmp_path):
    trees = [make_tree(tmp_path / name, PACKAGES[name][1]) for name in ("prog", "libc6", "libfoo1", "libbar0")]
    first = resolve("usr/sbin/prog", trees)
    assert resolve("usr/sbin/prog", trees).digest() == first.digest()
    os.unlink(tmp_path / "libc6/lib64/ld-linux-x86-64.so.2")
    (tmp_path / "libc6/lib64/ld-linux-x86-64.so.2").symlink_to(f"../{MULTIARCH}/ld-linux-x86-64.so.2")
    relinked = resolve("usr/sbin/prog", trees)
    assert relinked.executables == first.executables and relinked.digest() != first.digest()


# -------------------------------------------------------------- fetching
def test_the_packages_are_fetched_breadth_first_while_a_library_is_missing_and_the_unused_removed(apt, tmp_path):
    cache = tmp_path / "cache"

    program = debian_program("prog", "usr/sbin/prog", cache)

    assert as_dicts(program) == RESOLVED
    assert program.packages == ("prog=1.0-1", "libc6=1.0-1", "libfoo1=1.0-1", "libbar0=1.0-1")
    assert apt.calls == ["show prog", "download prog", "show libc6 libfoo1 virtual-thing", "download libc6",
                         "download libfoo1", "show virtual-thing libgcc-s1 libbar0", "download libgcc-s1",
                         "download libbar0"]
    assert sorted(path.name for path in cache.iterdir()) == [
        ".lock", "libbar0_1.0-1", "libc6_1.0-1", "libfoo1_1.0-1", "prog.json", "prog_1.0-1"]  # libgcc-s1 gave nothing


def test_a_recorded_program_is_resolved_again_without_apt_until_apt_is_asked_again(apt, tmp_path):
    cache = tmp_path / "cache"
    first = debian_program("prog", "usr/sbin/prog", cache)
    apt.calls.clear()

    assert debian_program("prog", "usr/sbin/prog", cache) == first
    assert apt.calls == []
    assert debian_program("prog", "usr/sbin/prog", cache, recheck_after=0) == first
    assert apt.calls == ["show prog libc6 libfoo1 libbar0"]  # the same versions: nothing fetched


def test_a_new_version_is_fetched_and_the_old_one_removed(apt, tmp_path):
    cache = tmp_path / "cache"
    debian_program("prog", "usr/sbin/prog", cache)
    newer = elf_object(needed=["libc.so.6"], soname="libbar.so.0", padding=b"new")
    apt.versions["libbar0"] = "2.0-1"
    apt.packages["libbar0"] = ("libc6", {f"{USR_MULTIARCH}/libbar.so.0": newer})

    program = debian_program("prog", "usr/sbin/prog", cache, recheck_after=0)

    assert program.files[f"{USR_MULTIARCH}/libbar.so.0"] == newer and "libbar0=2.0-1" in program.packages
    assert [call for call in apt.calls if call.startswith("download")][-2:] == ["download libgcc-s1",
                                                                               "download libbar0"]
    assert (cache / "libbar0_2.0-1").is_dir() and not (cache / "libbar0_1.0-1").exists()


def test_when_apt_cannot_answer_the_recorded_packages_are_used_and_without_them_the_error_is_raised(apt, tmp_path):
    cache = tmp_path / "cache"
    first = debian_program("prog", "usr/sbin/prog", cache)
    apt.works = False

    assert debian_program("prog", "usr/sbin/prog", cache, recheck_after=0) == first
    with pytest.raises(LabError, match="cannot run apt-cache"):
        debian_program("prog", "usr/sbin/prog", tmp_path / "empty-cache")


def test_a_package_apt_does_not_know_is_refused(apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debian_packages, "_apt_update", lambda why, field: None)  # the lists are as fresh as can be
    with pytest.raises(LabError, match="apt has no package nosuch, even after apt-get update"):
        debian_program("nosuch", "usr/sbin/nosuch", tmp_path / "cache")
