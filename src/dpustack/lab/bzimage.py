"""The uncompressed kernel (``vmlinux``) inside an x86 bzImage, when Python's own library can decompress it.

Under QEMU's software emulation the bzImage's decompressor is a slow part of
a boot; QEMU boots the ``vmlinux`` ELF straight away (PVH entry) if the
kernel was built with ``CONFIG_PVH``. The compressed payload is found
through the boot protocol's setup header (``payload_offset`` and
``payload_length``, protocol 2.08 and later) and recognised by its magic
bytes: gzip, xz, lzma and bzip2 are decompressed; lz4, lzo and zstd (no
decompressor in the standard library) give None, and the caller boots the
bzImage itself.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable

_HEADER_MAGIC = b"HdrS"
_MIN_PROTOCOL = 0x208  # payload_offset / payload_length exist from here on
_ELF = b"\x7fELF"
_PT_NOTE = 4
_XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point note QEMU looks for


def _gunzip(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data)  # stops at the stream's end


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _unlzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def _bunzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


_DECOMPRESSORS: tuple[tuple[bytes, str, Callable[[bytes], bytes] | None], ...] = (
    (b"\x1f\x8b", "gzip", _gunzip),
    (b"\xfd7zXZ\x00", "xz", _unxz),
    (b"\x5d\x00\x00", "lzma", _unlzma),
    (b"BZh", "bzip2", _bunzip2),
    (b"\x02\x21\x4c\x18", "lz4", None),
    (b"\x28\xb5\x2f\xfd", "zstd", None),
    (b"\x89LZO", "lzo", None),
)


def payload(image: bytes) -> bytes:
    """The compressed kernel inside a bzImage; ValueError if ``image`` is not one (or too old)."""
    if len(image) < 0x250 or image[0x202:0x206] != _HEADER_MAGIC:
        raise ValueError("not an x86 bzImage (no 'HdrS' setup header)")
    (protocol,) = struct.unpack_from("<H", image, 0x206)
    if protocol < _MIN_PROTOCOL:
        raise ValueError(f"boot protocol {protocol >> 8}.{protocol & 0xff:02d} has no payload fields")
    setup_sectors = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    if start + length > len(image):
        raise ValueError("the payload the setup header points at runs past the end of the image")
    return image[start:start + length]


def compression(image: bytes) -> str:
    """The name of the payload's compression (``lz4``, ``xz``…), ``unknown`` if not recognised."""
    data = payload(image)
    return next((name for magic, name, _ in _DECOMPRESSORS if data.startswith(magic)), "unknown")


def extract_vmlinux(image: bytes) -> bytes | None:
    """The vmlinux ELF in a bzImage, None if it cannot be had here or QEMU could not boot it (no PVH note)."""
    data = payload(image)
    decompress = next((function for magic, _, function in _DECOMPRESSORS if data.startswith(magic)), None)
    if decompress is None:
        return None
    try:
        vmlinux = decompress(data)
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise ValueError(f"the bzImage's payload does not decompress: {exc}") from exc
    return vmlinux if has_pvh_entry(vmlinux) else None


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit ELF kernel has the Xen PVH entry note QEMU needs to boot it directly."""
    if not elf.startswith(_ELF + b"\x02\x01"):
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", elf, phoff + index * phentsize)
        if kind == _PT_NOTE and _notes_have(elf[offset:offset + size], b"Xen", _XEN_ELFNOTE_PHYS32_ENTRY):
            return True
    return False


def _notes_have(notes: bytes, owner: bytes, kind: int) -> bool:
    at = 0
    while at + 12 <= len(notes):
        name_size, desc_size, note_type = struct.unpack_from("<III", notes, at)
        name = notes[at + 12:at + 12 + name_size].rstrip(b"\0")
        if name == owner and note_type == kind:
            return True
        at += 12 + _align4(name_size) + _align4(desc_size)
    return False


def _align4(size: int) -> int:
    return (size + 3) & ~3
