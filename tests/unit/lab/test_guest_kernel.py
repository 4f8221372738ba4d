"""The guest kernel cache: which kernel apt says is current, fetched once, reused, replaced when apt moves on.

apt is replaced by a fake that answers ``apt-cache show``, ``apt-get update``
and ``apt-get download`` (the latter with .deb files built here by
``dpkg-deb --build``); ``dpkg-deb -x`` is the real one.
"""

from __future__ import annotations

import gzip
import subprocess
import threading
from pathlib import Path

import pytest

from dpustack.lab import debian_packages
from dpustack.lab.guest_kernel import GuestKernel, cache_dir, current_kernel_package, guest_kernel
from dpustack.lab.state import LabError

from .kernel_files import PT_NOTE, bzimage, elf_file, note

PVH_KERNEL = elf_file(segments=[(PT_NOTE, note(b"Xen", 18, b"\0\0\x00\x01"))])
STANZA = """Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Provides: linux-latest-modules-6.1.0-57-cloud-amd64, virtualbox-guest-modules, wireguard-modules (= 1.0.0)
Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)
Description: Linux for x86-64 cloud (meta-package)
"""


class FakeApt:
    """apt's answers: ``stanza`` for apt-cache show (None: no lists yet), a built .deb for apt-get download."""

    def __init__(self, workdir: Path, stanza: str | None = STANZA, *, update_works: bool = True):
        self.workdir = workdir
        self.stanza = stanza
        self.update_works = update_works
        self.lists_fresh = stanza is not None
        self.mirror_has_it = True
        self.calls: list[str] = []
        self.payload = b"\x02\x21\x4c\x18" + bytes(64)  # lz4, as Debian's

    def __call__(self, argv: list[str], cwd: Path | None = None, **_: str) -> subprocess.CompletedProcess[str]:
        command = " ".join(argv[:2])
        if argv[0] == "dpkg-deb":
            return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        self.calls.append(command if command != "apt-get download" else f"download {argv[-1]}")
        if command == "apt-cache show":
            return self._answer(0, self.stanza) if self.lists_fresh and self.stanza else self._answer(100, "")
        if command == "apt-get update":
            if not self.update_works:
                return self._answer(100, "", "E: Could not open lock file /var/lib/apt/lists/lock")
            self.lists_fresh = self.mirror_has_it = True
            self.stanza = self.stanza or STANZA
            return self._answer(0, "")
        if command == "apt-get download":
            if not self.mirror_has_it:
                return self._answer(100, "", "E: Failed to fetch http://mirror/pool/linux-image.deb  404  Not Found")
            package, version = argv[-1].split("=")
            self.build_deb(package, version, Path(cwd))
            return self._answer(0, "")
        raise AssertionError(f"unexpected command {argv}")

    def build_deb(self, package: str, version: str, directory: Path) -> None:
        release = package.removeprefix("linux-image-")
        tree = self.workdir / f"tree-{release}"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN/control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
                                             f"Maintainer: test <test@example.org>\nDescription: a test kernel\n")
        (tree / "boot").mkdir()
        (tree / f"boot/vmlinuz-{release}").write_bytes(bzimage(self.payload))
        (tree / f"lib/modules/{release}/kernel").mkdir(parents=True)
        subprocess.run(["dpkg-deb", "--build", "-Znone", str(tree), str(directory / f"{package}_{version}_amd64.deb")],
                       check=True, capture_output=True)

    @staticmethod
    def _answer(code: int, out: str, err: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], code, out, err)


@pytest.fixture
def apt(tmp_path, monkeypatch) -> FakeApt:
    fake = FakeApt(tmp_path / "apt")
    monkeypatch.setattr(debian_packages, "_apt", fake)
    return fake


def test_the_current_kernel_is_the_image_the_metapackage_depends_on(apt):
    assert current_kernel_package() == ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3")


def test_without_package_lists_apt_is_updated_first(apt):
    apt.stanza, apt.lists_fresh = None, False

    assert current_kernel_package() == ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3")
    assert apt.calls == ["apt-cache show", "apt-get update", "apt-cache show"]


def test_a_failed_update_says_what_apt_said(apt):
    apt.stanza, apt.lists_fresh, apt.update_works = None, False, False

    with pytest.raises(LabError, match=r"apt has no package linux-image-cloud-amd64; apt-get update failed too .*"
                                       r"Could not open lock file") as error:
        current_kernel_package()
    assert error.value.field == "metapackage"


def test_the_first_call_fetches_and_unpacks_the_next_finds_it_in_the_cache(apt, tmp_path):
    kernel = guest_kernel(tmp_path / "cache")

    release = "6.1.0-57-cloud-amd64"
    root = tmp_path / "cache" / f"linux-image-{release}_6.1.192-3"
    assert kernel == GuestKernel(root, release, root / f"boot/vmlinuz-{release}", None, root / f"lib/modules/{release}")
    assert kernel.boot_image == kernel.bzimage  # lz4: no vmlinux
    assert apt.calls == ["apt-cache show", f"download linux-image-{release}=6.1.192-3"]
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [root.name]  # no partial fetch left

    assert guest_kernel(tmp_path / "cache") == kernel
    assert len(apt.calls) == 2  # apt was not even asked
    assert guest_kernel(tmp_path / "cache", recheck_after=0) == kernel
    assert apt.calls[2:] == ["apt-cache show"]  # asked, and nothing to fetch


def test_a_version_the_mirror_dropped_is_fetched_again_after_an_update(apt, tmp_path):
    apt.mirror_has_it = False

    guest_kernel(tmp_path / "cache")

    assert [call.split()[0] for call in apt.calls] == ["apt-cache", "download", "apt-get", "download"]


def test_a_gzip_payload_gives_a_vmlinux_to_boot(apt, tmp_path):
    apt.payload = gzip.compress(PVH_KERNEL)

    kernel = guest_kernel(tmp_path / "cache")

    assert kernel.vmlinux == kernel.root / f"boot/vmlinux-{kernel.release}"
    assert kernel.boot_image == kernel.vmlinux and kernel.vmlinux.read_bytes() == PVH_KERNEL


def test_a_new_kernel_replaces_the_old_one_in_the_cache(apt, tmp_path):
    old = guest_kernel(tmp_path / "cache")
    apt.stanza = STANZA.replace("57", "58").replace("6.1.192-3", "6.1.200-1")

    new = guest_kernel(tmp_path / "cache", recheck_after=0)

    assert new.release == "6.1.0-58-cloud-amd64" and new.bzimage.exists()
    assert not old.root.exists()


def test_a_new_kernel_leaves_what_else_the_cache_keeps(apt, tmp_path):
    guest_kernel(tmp_path / "cache")
    for other in ("libvirt", "packages"):  # libvirt's capabilities, the guest's Debian packages
        (tmp_path / "cache" / other).mkdir()
        (tmp_path / "cache" / other / "kept").write_text("x")
    apt.stanza = STANZA.replace("57", "58").replace("6.1.192-3", "6.1.200-1")

    new = guest_kernel(tmp_path / "cache", recheck_after=0)

    assert new.release == "6.1.0-58-cloud-amd64"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == [
        "libvirt", "linux-image-6.1.0-58-cloud-amd64_6.1.200-1", "packages"]
    assert (tmp_path / "cache" / "packages" / "kept").read_text() == "x"


def test_when_apt_cannot_answer_the_cached_kernel_is_used_and_without_one_the_error_is_raised(apt, tmp_path):
    cached = guest_kernel(tmp_path / "cache")
    apt.stanza, apt.lists_fresh, apt.update_works = None, False, False

    assert guest_kernel(tmp_path / "cache", recheck_after=0) == cached
    with pytest.raises(LabError, match="apt-get update failed too"):
        guest_kernel(tmp_path / "empty-cache")


def test_callers_at_the_same_time_fetch_once(apt, tmp_path):
    kernels_seen: list[GuestKernel] = []
    threads = [threading.Thread(target=lambda: kernels_seen.append(guest_kernel(tmp_path / "cache")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(kernels_seen) == 4 and len(set(kernels_seen)) == 1
    assert sum(call.startswith("download") for call in apt.calls) == 1


def test_the_cache_is_the_users_unless_the_environment_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("DPUSTACK_GUEST_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache/dpustack/guest"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg/dpustack/guest"
    monkeypatch.setenv("DPUSTACK_GUEST_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
