"""Reading what the loader reads from an ELF file: its interpreter, DT_NEEDED and DT_SONAME, through the program
headers alone."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dpustack.lab.elf_dynamic import Dynamic, dynamic
from dpustack.lab.guest_initramfs import BUSYBOX

from .elf_files import elf_object


def test_an_executable_names_its_loader_and_its_libraries_in_order():
    program = elf_object(needed=["libudev.so.1", "libglib-2.0.so.0", "libc.so.6"],
                         interpreter="/lib64/ld-linux-x86-64.so.2", padding=bytes(37))
    assert dynamic(program) == Dynamic("/lib64/ld-linux-x86-64.so.2",
                                       ("libudev.so.1", "libglib-2.0.so.0", "libc.so.6"), None)


def test_a_library_has_its_soname_and_a_static_executable_has_nothing():
    assert dynamic(elf_object(needed=["libc.so.6"], soname="libm.so.6")) == Dynamic(None, ("libc.so.6",),
                                                                                     "libm.so.6")
    assert dynamic(elf_object(dynamic=False)) == Dynamic(None, (), None)


def test_this_machines_busybox_and_libc_read_as_the_loader_sees_them():
    assert dynamic(BUSYBOX.read_bytes()) == Dynamic(None, (), None)  # busybox-static
    libc = dynamic(Path("/lib/x86_64-linux-gnu/libc.so.6").read_bytes())
    assert libc.soname == "libc.so.6" and libc.needed == ("ld-linux-x86-64.so.2",)


@pytest.mark.parametrize("data, message", [
    (b"#!/bin/sh\n", "not a 64-bit little-endian ELF"),
    (b"\x7fELF\x01\x01\x01" + bytes(60), "not a 64-bit little-endian ELF"),  # 32-bit
])
def test_what_is_no_elf64_file_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        dynamic(data)


def test_headers_pointing_outside_the_file_are_refused():
    whole = elf_object(needed=["libc.so.6"], interpreter="/lib64/ld-linux-x86-64.so.2")
    with pytest.raises(ValueError, match="past the end"):
        dynamic(whole[:-8])  # the dynamic section cut short
    with pytest.raises(ValueError, match="program headers past the end"):
        dynamic(whole[:80])
    moved = bytearray(whole)
    struct.pack_into("<Q", moved, 64 + 16, 0x900000)  # the PT_LOAD segment's address: DT_STRTAB in none
    with pytest.raises(ValueError, match="in no loaded segment"):
        dynamic(bytes(moved))
