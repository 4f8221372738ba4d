"""Tiny dynamically linked ELF64 files made byte by byte: what the loader reads (PT_INTERP, PT_DYNAMIC with
DT_NEEDED, DT_SONAME and DT_STRTAB in a PT_LOAD segment) and nothing else."""

from __future__ import annotations

import struct

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NEEDED, DT_STRTAB, DT_SONAME = 1, 5, 14
BASE = 0x400000  # the load address of the file's only PT_LOAD segment
_EHDR, _PHDR = 64, 56


def elf_object(*, needed: list[str] = (), soname: str | None = None, interpreter: str | None = None,
               dynamic: bool = True, padding: bytes = b"") -> bytes:
    """An x86-64 ELF (a shared object, or an executable with ``interpreter``) whose dynamic section names
    ``needed`` and ``soname``; ``dynamic=False``: no PT_DYNAMIC at all (a static executable)."""
    strings = bytearray(b"\0")
    offsets = {}
    for name in [*needed, *([soname] if soname else [])]:
        offsets.setdefault(name, len(strings))
        strings += name.encode() + b"\0"
    interp = interpreter.encode() + b"\0" if interpreter else b""
    count = 1 + (1 if interp else 0) + (1 if dynamic else 0)
    interp_at = _EHDR + _PHDR * count
    strtab_at = interp_at + len(interp) + len(padding)
    entries = [(DT_NEEDED, offsets[name]) for name in needed]
    if soname:
        entries.append((DT_SONAME, offsets[soname]))
    entries += [(DT_STRTAB, BASE + strtab_at), (0, 0)]
    dynamic_at = strtab_at + len(strings)
    dynamic_bytes = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    size = dynamic_at + len(dynamic_bytes)
    headers = [(PT_LOAD, 0, BASE, size)]
    if interp:
        headers.append((PT_INTERP, interp_at, BASE + interp_at, len(interp)))
    if dynamic:
        headers.append((PT_DYNAMIC, dynamic_at, BASE + dynamic_at, len(dynamic_bytes)))
    header = b"\x7fELF\x02\x01\x01".ljust(16, b"\0") + struct.pack(
        "<HHIQQQIHHHHHH", 3 if not interp else 2, 62, 1, BASE, _EHDR, 0, 0, _EHDR, _PHDR, len(headers), 64, 0, 0)
    program = b"".join(struct.pack("<IIQQQQQQ", kind, 4, offset, vaddr, vaddr, length, length, 8)
                       for kind, offset, vaddr, length in headers)
    return header + program + interp + padding + bytes(strings) + dynamic_bytes
