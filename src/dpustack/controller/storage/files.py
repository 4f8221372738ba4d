"""Durable file writes: data goes to a temporary name and gets its final name only once flushed.

A reader that finds the final name therefore finds complete data, even after a
crash or a power loss; a crash leaves at most the temporary file, which the
writer's next attempt removes.
"""

from __future__ import annotations

import os
from pathlib import Path

PARTIAL_SUFFIX = ".part"


def partial_path(final: Path) -> Path:
    """Where the data of `final` is written before it is complete."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries, so a rename into it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(partial: Path, final: Path) -> None:
    """Flush `partial`, rename it to `final` (atomically replacing it) and flush the directory."""
    fsync_file(partial)
    os.replace(partial, final)
    fsync_dir(final.parent)


def sparse_copy(source: Path, target: Path) -> None:
    """Copy `source` to a new `target` of the same size, leaving its holes holes (they cost no disk)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            while start < end:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), end - start, start, start)
                if copied == 0:  # the file shrank under us
                    break
                start += copied
            offset = end
        dst.truncate(size)


def remove(final: Path) -> None:
    """Remove `final` and any partial copy of it; missing files are fine."""
    partial_path(final).unlink(missing_ok=True)
    final.unlink(missing_ok=True)
