"""newc cpio archives as the kernel unpacks them: headers, alignment, parents before children."""

from __future__ import annotations

import stat

import pytest

from dpustack.lab.cpio_archive import CpioArchive, read_newc


def test_members_read_back_with_their_kind_mode_and_bytes():
    archive = CpioArchive()
    archive.file("etc/hosts", b"127.0.0.1 localhost\n")
    archive.file("init", b"#!/bin/sh\n", mode=0o755)
    archive.symlink("bin/sh", "/bin/busybox")
    archive.device("dev/console", major=5, minor=1)

    entries = read_newc(archive.to_bytes())

    assert list(entries) == ["etc", "etc/hosts", "init", "bin", "bin/sh", "dev", "dev/console"]
    assert entries["etc/hosts"].data == b"127.0.0.1 localhost\n" and stat.S_IMODE(entries["etc/hosts"].mode) == 0o644
    assert entries["init"].is_file and stat.S_IMODE(entries["init"].mode) == 0o755
    assert stat.S_ISDIR(entries["etc"].mode)
    assert stat.S_ISLNK(entries["bin/sh"].mode) and entries["bin/sh"].data == b"/bin/busybox"
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)


def test_every_header_starts_on_a_four_byte_boundary_whatever_the_name_and_size():
    archive = CpioArchive()
    for n in range(1, 9):
        archive.file("x" * n, b"y" * n)
    blob = archive.to_bytes()

    assert len(blob) % 4 == 0
    assert [i for i in range(0, len(blob), 4) if blob.startswith(b"070701", i)] == [
        i for i in range(len(blob)) if blob.startswith(b"070701", i)]
    assert {name: entry.data for name, entry in read_newc(blob).items()} == {"x" * n: b"y" * n for n in range(1, 9)}


def test_the_same_members_give_the_same_bytes():
    def build() -> bytes:
        archive = CpioArchive()
        archive.file("a/b", b"data")
        return archive.to_bytes()

    assert build() == build()


def test_a_name_twice_or_outside_the_archive_is_refused():
    archive = CpioArchive()
    archive.file("init", b"")
    with pytest.raises(ValueError, match="'init' is in the archive already"):
        archive.file("/init", b"")
    for bad in ("", "/", "a/../b", "./a"):
        with pytest.raises(ValueError, match="is not a path inside the archive"):
            archive.file(bad, b"")
