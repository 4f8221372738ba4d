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


def remove(final: Path) -> None:
    """Remove `final` and any partial copy of it; missing files are fine."""
    partial_path(final).unlink(missing_ok=True)
    final.unlink(missing_ok=True)
