"""What the dynamic loader reads from an ELF64 little-endian file: its program interpreter and its dynamic section.

    info = dynamic(Path("usr/sbin/qemu-ga").read_bytes())
    info.interpreter   # '/lib64/ld-linux-x86-64.so.2' (PT_INTERP), None for a static executable or a library
    info.needed        # ('libudev.so.1', ..., 'libc.so.6'): DT_NEEDED, in order
    info.soname        # DT_SONAME of a shared library, else None

Only the program headers are read, as the loader does (section headers may be stripped): PT_INTERP's
string, and PT_DYNAMIC's entries, whose strings are in the table at DT_STRTAB, a virtual address
mapped to a file offset through the PT_LOAD segment holding it. A file that is not such an ELF, or
whose headers point outside it, is a ValueError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF64_LE = b"\x7fELF\x02\x01"
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14
_PHDR = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
_DYN = struct.Struct("<qQ")  # tag, value


@dataclass(frozen=True)
class Dynamic:
    """The loader's view of one ELF file."""

    interpreter: str | None
    needed: tuple[str, ...]
    soname: str | None


def is_elf64(data: bytes) -> bool:
    return data.startswith(ELF64_LE)


def dynamic(data: bytes) -> Dynamic:
    """The interpreter, DT_NEEDED entries and DT_SONAME of ``data`` (a whole ELF64 LE file)."""
    if not is_elf64(data):
        raise ValueError("not a 64-bit little-endian ELF file")
    segments = list(_segments(data))
    interpreter = None
    for kind, offset, _, size in segments:
        if kind == PT_INTERP:
            interpreter = _string(data, offset, offset + size)
    entries: list[tuple[int, int]] = []
    for kind, offset, _, size in segments:
        if kind == PT_DYNAMIC:
            entries = _entries(data, offset, size)
    strtab = next((value for tag, value in entries if tag == DT_STRTAB), None)
    if strtab is None:
        if any(tag in (DT_NEEDED, DT_SONAME) for tag, _ in entries):
            raise ValueError("a dynamic section naming libraries without a string table")
        return Dynamic(interpreter, (), None)
    table = _file_offset(segments, strtab)
    needed = tuple(_string(data, table + value) for tag, value in entries if tag == DT_NEEDED)
    soname = next((_string(data, table + value) for tag, value in entries if tag == DT_SONAME), None)
    return Dynamic(interpreter, needed, soname)


def _segments(data: bytes):
    """``(type, file offset, virtual address, file size)`` of each program header."""
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phnum and phentsize < _PHDR.size:
        raise ValueError(f"program headers of {phentsize} bytes")
    for index in range(phnum):
        at = phoff + index * phentsize
        if at + _PHDR.size > len(data):
            raise ValueError("program headers past the end of the file")
        kind, _, offset, vaddr, _, filesz, _, _ = _PHDR.unpack_from(data, at)
        if kind in (PT_INTERP, PT_DYNAMIC) and offset + filesz > len(data):
            raise ValueError(f"segment type {kind} past the end of the file")
        yield kind, offset, vaddr, filesz


def _entries(data: bytes, offset: int, size: int) -> list[tuple[int, int]]:
    entries = []
    for at in range(offset, offset + size - _DYN.size + 1, _DYN.size):
        tag, value = _DYN.unpack_from(data, at)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _file_offset(segments: list[tuple[int, int, int, int]], address: int) -> int:
    for kind, offset, vaddr, size in segments:
        if kind == PT_LOAD and vaddr <= address < vaddr + size:
            return offset + address - vaddr
    raise ValueError(f"address {address:#x} is in no loaded segment")


def _string(data: bytes, start: int, end: int | None = None) -> str:
    stop = data.find(b"\0", start, len(data) if end is None else end)
    if start >= len(data) or stop < 0:
        raise ValueError(f"no string at file offset {start:#x}")
    return data[start:stop].decode("utf-8", errors="surrogateescape")
