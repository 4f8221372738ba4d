"""Tiny kernel files made byte by byte: ELF64 modules with a ``.modinfo`` section, a module directory,
kernels with notes, bzImages."""

from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path

PT_INTERP, PT_NOTE = 3, 4
_EHDR, _PHDR, _SHDR = 64, 56, 64


def elf_file(*, sections: dict[str, bytes] | None = None, segments: list[tuple[int, bytes]] | None = None) -> bytes:
    """An x86-64 ELF with the named sections (plus ``.shstrtab``) and ``(p_type, contents)`` segments."""
    sections = dict(sections or {})
    segments = list(segments or [])
    names = b"\0" + b"".join(name.encode() + b"\0" for name in [*sections, ".shstrtab"])
    data = bytearray()
    data_at = _EHDR + _PHDR * len(segments)
    placed = []
    for contents in [*(c for _, c in segments), *sections.values(), names]:
        placed.append((data_at + len(data), len(contents)))
        data += contents
    shoff = data_at + len(data)
    header = b"\x7fELF\x02\x01\x01".ljust(16, b"\0") + struct.pack(
        "<HHIQQQIHHHHHH", 1, 62, 1, 0, _EHDR if segments else 0, shoff, 0, _EHDR, _PHDR, len(segments),
        _SHDR, len(sections) + 2, len(sections) + 1)
    program = b"".join(struct.pack("<IIQQQQQQ", kind, 0, offset, 0, 0, size, size, 4)
                       for (kind, _), (offset, size) in zip(segments, placed))
    section_headers = bytes(_SHDR)
    name_at = 1
    for name, (offset, size) in zip([*sections, ".shstrtab"], placed[len(segments):]):
        section_headers += struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, size, 0, 0, 1, 0)
        name_at += len(name) + 1
    return header + program + bytes(data) + section_headers


def kernel_module(name: str, depends: list[str] = ()) -> bytes:
    """A module object whose .modinfo says its name and what it depends on."""
    modinfo = f"license=GPL\0depends={','.join(depends)}\0name={name}\0".encode()
    return elf_file(sections={".text": b"\xc3", ".modinfo": modinfo})


def note(owner: bytes, kind: int, desc: bytes) -> bytes:
    def pad(blob: bytes) -> bytes:
        return blob + bytes(-len(blob) % 4)
    return struct.pack("<III", len(owner) + 1, len(desc), kind) + pad(owner + b"\0") + pad(desc)


# the virtio stack of Debian 12's cloud kernel, as its modules' .modinfo say
VIRTIO = {
    "drivers/virtio/virtio_ring.ko": [],
    "drivers/virtio/virtio.ko": [],
    "drivers/virtio/virtio_pci_modern_dev.ko": [],
    "drivers/virtio/virtio_pci_legacy_dev.ko": [],
    "drivers/virtio/virtio_pci.ko": ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"],
    "drivers/block/virtio_blk.ko": ["virtio_ring", "virtio"],
    "drivers/net/virtio_net.ko": ["net_failover", "virtio_ring", "virtio"],
    "net/core/net_failover.ko": ["failover"],
    "net/core/failover.ko": [],
}


def modules_dir(root: Path, modules: dict[str, list[str]], *, builtin: list[str] = ()) -> Path:
    """``root/lib/modules/<release>`` with a module per path (``.xz``/``.gz`` compressed as named)."""
    directory = root / "lib/modules/6.1.0-57-cloud-amd64"
    for path, depends in modules.items():
        file = directory / "kernel" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        code = kernel_module(file.name.split(".")[0], depends)
        if path.endswith(".xz"):
            code = lzma.compress(code)
        elif path.endswith(".gz"):
            code = gzip.compress(code)
        file.write_bytes(code)
    (directory / "modules.builtin").write_text("".join(f"kernel/{path}\n" for path in builtin))
    return directory


def bzimage(payload: bytes, *, protocol: int = 0x20F, setup_sectors: int = 1, offset: int = 0x40) -> bytes:
    """A bzImage whose setup header points at ``payload`` (no real setup or decompressor code)."""
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    struct.pack_into("<II", setup, 0x248, offset, len(payload))
    return bytes(setup) + bytes(offset) + payload + b"\0\0\0\0"
