"""The controller's one door to qemu-img: `info` (JSON, its machine interface), and the offline work on
volume files: `convert` to raw, `create` of qcow2 layers, `rebase` and `resize`.

Uploaded files are untrusted, so `info` runs under resource limits
(prlimit: address space and CPU time) and with a timeout, and never follows
a backing chain (it only opens the file it is given). The other commands
work on the storage pool's own files and always name the formats, so
qemu-img never probes one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpustack.errors import DpustackError

QEMU_IMG = "qemu-img"
INFO_TIMEOUT = 60.0  # seconds; a plain header read takes milliseconds
ADDRESS_SPACE = 1 << 30  # bytes of virtual memory qemu-img may map while reading a header
CPU_SECONDS = 30


class QemuImgError(DpustackError):
    """qemu-img could not read the file, or did not answer in time (the file is to blame)."""


@dataclass(frozen=True)
class ImageInfo:
    """What `qemu-img info` found in a file."""

    format: str
    virtual_size: int
    backing_file: str | None
    data_file: str | None

    @classmethod
    def from_json(cls, answer: dict[str, Any]) -> "ImageInfo":
        specific = (answer.get("format-specific") or {}).get("data") or {}
        try:
            return cls(format=str(answer["format"]), virtual_size=int(answer["virtual-size"]),
                       backing_file=answer.get("full-backing-filename") or answer.get("backing-filename"),
                       data_file=specific.get("data-file"))
        except (KeyError, TypeError, ValueError) as exc:
            raise QemuImgError(f"qemu-img info answered without {exc}") from exc


def _limited(argv: list[str]) -> list[str]:
    """argv under prlimit when util-linux provides it (it does on Debian, where it is essential)."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return argv
    return [prlimit, f"--as={ADDRESS_SPACE}", f"--cpu={CPU_SECONDS}", "--", *argv]


def _run(argv: list[str], what: str, *, timeout: float | None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise DpustackError(f"{QEMU_IMG} is not installed on the controller (Debian package qemu-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise QemuImgError(f"{QEMU_IMG} {what} did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise QemuImgError(reason.removeprefix(f"{QEMU_IMG}: "))
    return done.stdout


def info(path: Path, *, disk_format: str | None = None, force_share: bool = False,
         timeout: float = INFO_TIMEOUT) -> ImageInfo:
    """What `path` holds: its format (probed unless `disk_format` is given), sizes and references.

    `force_share` reads a file that a running daemon holds open (qemu-img's
    `-U`); what such a read finds in the header may lag behind the daemon.
    """
    argv = [QEMU_IMG, "info", "--output=json"]
    if disk_format is not None:
        argv += ["-f", disk_format]
    if force_share:
        argv.append("-U")
    output = _run(_limited([*argv, str(path)]), "info", timeout=timeout)
    try:
        answer = json.loads(output)
    except ValueError as exc:
        raise QemuImgError(f"qemu-img info did not answer JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise QemuImgError("qemu-img info did not answer a JSON object")
    return ImageInfo.from_json(answer)


def convert_to_raw(source: Path, source_format: str, target: Path) -> None:
    """Write the disk that `source` (of `source_format`) holds to `target` as raw bytes."""
    # No timeout: converting a large image takes as long as the disk needs.
    _run([QEMU_IMG, "convert", "-f", source_format, "-O", "raw", str(source), str(target)], "convert",
         timeout=None)


def create_qcow2(path: Path, size: int | None, *, backing: Path | None = None,
                 backing_format: str | None = None, open_backing: bool = True) -> None:
    """A new qcow2 file of `size` bytes (None: the size of `backing`), empty or an overlay on `backing`.

    The overlay records `backing` by its absolute path and its format, so
    whoever opens the chain never probes a format. With `open_backing`
    False, `backing` is only named, never opened (qemu-img's `-u`; `size`
    is needed then): for an overlay on a file a running daemon holds.
    """
    argv = [QEMU_IMG, "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-b", str(backing.absolute()), "-F", backing_format or "qcow2"]
        if not open_backing:
            assert size is not None, "an overlay whose backing is not opened needs its size"
            argv.append("-u")
    argv.append(str(path))
    if size is not None:
        argv.append(str(size))
    _run(argv, "create", timeout=INFO_TIMEOUT)


def rebase(path: Path, backing: Path | None, *, backing_format: str = "qcow2") -> None:
    """Put the qcow2 file `path` on `backing` (None: on nothing), keeping the disk it shows.

    The data that differs between the old and the new backing is copied
    into `path` first; an interrupted rebase leaves `path` showing the same
    disk on its old backing.
    """
    argv = [QEMU_IMG, "rebase", "-q", "-f", "qcow2"]
    argv += ["-b", str(backing.absolute()), "-F", backing_format] if backing is not None else ["-b", ""]
    # No timeout: copying the shared data in takes as long as the disk needs.
    _run([*argv, str(path)], "rebase", timeout=None)


def resize(path: Path, size: int) -> None:
    """Grow the qcow2 file `path` to show `size` bytes."""
    _run([QEMU_IMG, "resize", "-q", "-f", "qcow2", str(path), str(size)], "resize", timeout=INFO_TIMEOUT)
