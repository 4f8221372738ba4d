"""A tiny raw boot disk for the lab: an MBR whose boot code prints one line and halts."""

from __future__ import annotations

import struct
from pathlib import Path

SECTOR = 512
IMAGE_SIZE = 256 * 1024
FIRST_PARTITION_LBA = 64

# 16-bit real mode at 0x7C00: print MESSAGE with BIOS teletype (int 10h, AH=0Eh), then halt.
_BOOT_CODE = bytes([
    0xFA,                    # cli
    0x31, 0xC0,              # xor ax, ax
    0x8E, 0xD8,              # mov ds, ax
    0xBE, 0x1A, 0x7C,        # mov si, 0x7C1A  (MESSAGE, right after this code)
    0xFC,                    # cld
    0xAC,                    # next: lodsb
    0x08, 0xC0,              # or al, al
    0x74, 0x09,              # jz halt
    0xB4, 0x0E,              # mov ah, 0x0E
    0xBB, 0x07, 0x00,        # mov bx, 0x0007
    0xCD, 0x10,              # int 0x10
    0xEB, 0xF2,              # jmp next
    0xF4,                    # halt: hlt
    0xEB, 0xFD,              # jmp halt
])
MESSAGE = b"dpustack lab image: booted, nothing else to do\r\n\x00"


def boot_sector(total_sectors: int) -> bytes:
    """The 512-byte MBR: boot code, one bootable Linux partition, signature 55 AA."""
    code = _BOOT_CODE + MESSAGE
    sectors = total_sectors - FIRST_PARTITION_LBA
    # status, CHS first (unused), type 0x83, CHS last (unused), first LBA, sector count
    partition = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                            FIRST_PARTITION_LBA, sectors)
    mbr = code.ljust(446, b"\x00") + partition + bytes(16 * 3) + b"\x55\xaa"
    assert len(mbr) == SECTOR
    return mbr


def write_boot_image(path: Path, size: int = IMAGE_SIZE) -> Path:
    """Write the image to `path` (replacing it) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(boot_sector(size // SECTOR))
        handle.truncate(size)
    return path
