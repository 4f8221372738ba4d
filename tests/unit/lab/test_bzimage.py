"""The vmlinux inside a bzImage: found through the setup header, decompressed when Python can."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from dpustack.lab.bzimage import compression, extract_vmlinux, has_pvh_entry, payload

from .kernel_files import PT_NOTE, bzimage, elf_file, note

PVH_KERNEL = elf_file(segments=[(PT_NOTE, note(b"Linux", 6, b"6.1") + note(b"Xen", 18, b"\0\0\x00\x01"))])


@pytest.mark.parametrize("name, compress", [("gzip", gzip.compress), ("xz", lzma.compress),
                                            ("bzip2", bz2.compress)])
def test_a_payload_python_can_decompress_gives_the_vmlinux(name, compress):
    image = bzimage(compress(PVH_KERNEL))

    assert compression(image) == name
    assert extract_vmlinux(image) == PVH_KERNEL


def test_an_lz4_payload_like_debians_is_left_to_the_bzimages_own_decompressor():
    image = bzimage(b"\x02\x21\x4c\x18" + bytes(64))

    assert compression(image) == "lz4"
    assert extract_vmlinux(image) is None


def test_a_kernel_without_the_pvh_entry_note_is_not_offered_qemu_could_not_boot_it():
    assert has_pvh_entry(PVH_KERNEL)
    without = elf_file(segments=[(PT_NOTE, note(b"Xen", 17, b"abcd"))])
    assert not has_pvh_entry(without)
    assert extract_vmlinux(bzimage(gzip.compress(without))) is None


def test_the_payload_is_where_the_setup_header_says():
    assert payload(bzimage(b"compressed kernel", setup_sectors=3, offset=0x123)) == b"compressed kernel"
    old_style = bytearray(bzimage(b"x", setup_sectors=4))
    old_style[0x1F1] = 0  # "0 means 4", say old boot loaders
    assert payload(bytes(old_style)) == b"x"


@pytest.mark.parametrize("image, reason", [
    (b"MZ" + bytes(4096), "not an x86 bzImage"),
    (bzimage(b"x", protocol=0x207), "boot protocol 2.07 has no payload fields"),
    (bzimage(b"x")[:-8], "runs past the end of the image"),
])
def test_what_is_not_a_readable_bzimage_is_named(image, reason):
    with pytest.raises(ValueError, match=reason):
        payload(image)


def test_a_corrupt_payload_is_an_error_not_a_kernel():
    with pytest.raises(ValueError, match="does not decompress"):
        extract_vmlinux(bzimage(b"\x1f\x8b" + bytes(64)))
