"""cpio archives in the "newc" format, the one the Linux kernel unpacks as an initramfs.

    archive = CpioArchive()
    archive.directory("bin")
    archive.file("bin/busybox", data, mode=0o755)
    archive.symlink("bin/sh", "busybox")
    archive.device("dev/console", major=5, minor=1)
    blob = archive.to_bytes()

Entries keep the order they were added in (a directory before what is in
it), belong to root and have mtime 0, so the same entries give the same
bytes. :func:`read_newc` reads an archive back into its entries.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
           "rdevmajor", "rdevminor", "namesize", "check")
_HEADER_SIZE = len(MAGIC) + 8 * len(_FIELDS)


@dataclass(frozen=True)
class CpioEntry:
    """One member: ``name`` without a leading ``/``, its full st_mode, its bytes (a symlink's target)."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


class CpioArchive:
    """Members of a newc archive, added in order; :meth:`to_bytes` writes them and the trailer."""

    def __init__(self) -> None:
        self._entries: dict[str, CpioEntry] = {}

    def directory(self, name: str, mode: int = 0o755) -> None:
        """Add a directory and any parent not added yet."""
        parts = _clean(name).split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in self._entries:
                self._add(CpioEntry(path, stat.S_IFDIR | mode))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add_in_directory(CpioEntry(_clean(name), stat.S_IFREG | mode, data))

    def symlink(self, name: str, target: str) -> None:
        self._add_in_directory(CpioEntry(_clean(name), stat.S_IFLNK | 0o777, target.encode()))

    def device(self, name: str, *, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node (the kernel needs ``dev/console`` before devtmpfs is mounted)."""
        self._add_in_directory(CpioEntry(_clean(name), stat.S_IFCHR | mode, rdev=(major, minor)))

    def names(self) -> list[str]:
        return list(self._entries)

    def to_bytes(self) -> bytes:
        out = bytearray()
        for ino, entry in enumerate(self._entries.values(), start=1):
            _write(out, ino, entry)
        _write(out, 0, CpioEntry(TRAILER, 0))
        return bytes(out)

    def _add_in_directory(self, entry: CpioEntry) -> None:
        parent = entry.name.rpartition("/")[0]
        if parent:
            self.directory(parent)
        self._add(entry)

    def _add(self, entry: CpioEntry) -> None:
        if entry.name in self._entries:
            raise ValueError(f"'{entry.name}' is in the archive already")
        self._entries[entry.name] = entry


def read_newc(blob: bytes) -> dict[str, CpioEntry]:
    """Every member of a newc archive by name, up to its trailer; ValueError if it is not one."""
    entries: dict[str, CpioEntry] = {}
    offset = 0
    while True:
        if blob[offset:offset + len(MAGIC)] != MAGIC:
            raise ValueError(f"no newc cpio header at byte {offset}")
        fields = dict(zip(_FIELDS, (int(blob[offset + 6 + 8 * i:offset + 14 + 8 * i], 16)
                                    for i in range(len(_FIELDS)))))
        name_start = offset + _HEADER_SIZE
        name = blob[name_start:name_start + fields["namesize"] - 1].decode()
        data_start = _aligned(name_start + fields["namesize"])
        data = blob[data_start:data_start + fields["filesize"]]
        offset = _aligned(data_start + fields["filesize"])
        if name == TRAILER:
            return entries
        entries[name] = CpioEntry(name, fields["mode"], data, (fields["rdevmajor"], fields["rdevminor"]))


def _write(out: bytearray, ino: int, entry: CpioEntry) -> None:
    name = entry.name.encode() + b"\0"
    values = {"ino": ino, "mode": entry.mode, "uid": 0, "gid": 0,
              "nlink": 2 if stat.S_ISDIR(entry.mode) else 1, "mtime": 0, "filesize": len(entry.data),
              "devmajor": 0, "devminor": 0, "rdevmajor": entry.rdev[0], "rdevminor": entry.rdev[1],
              "namesize": len(name), "check": 0}
    out += MAGIC + b"".join(b"%08x" % values[field] for field in _FIELDS) + name
    out += bytes(_aligned(len(out)) - len(out))
    out += entry.data
    out += bytes(_aligned(len(out)) - len(out))


def _aligned(offset: int) -> int:
    return (offset + 3) & ~3


def _clean(name: str) -> str:
    path = name.strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"'{name}' is not a path inside the archive")
    return path
