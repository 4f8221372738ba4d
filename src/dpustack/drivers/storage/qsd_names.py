"""How the ``qsd`` storage driver names what it creates in qemu-storage-daemon.

The daemon is the only record of the attachments, so the names carry the ids:

* export id ``dpustack.<function id>.<volume id>``: the vhost-user-blk
  export of one attachment. QEMU ids take letters, digits and ``-._`` and
  start with a letter (no length limit for export ids), so each id is
  escaped: letters, digits and ``-`` stay, every other byte of its UTF-8
  becomes ``_`` and two hex digits (``vol:1`` → ``vol_3a1``), and ``.``
  separates the parts.
* node name ``dpustack-<22 hex digits>``: the NBD client node of a volume, a
  SHA-256 of the volume id (node names are shorter than 32 characters).
  One node per volume: a volume is attached at most once per DPU.

An export whose id does not decode is not the driver's and is left alone.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "dpustack"

_KEPT = re.compile(r"[A-Za-z0-9-]")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9-]|_[0-9a-f]{2})+")
_HASH_DIGITS = 22  # "dpustack-" + 22 = 31 characters, the longest node name QEMU takes


def export_id(function_id: str, volume_id: str) -> str:
    """The id of the vhost-user-blk export serving ``volume_id`` through ``function_id``."""
    return f"{PREFIX}.{_escape(function_id)}.{_escape(volume_id)}"


def parse_export_id(export: str) -> tuple[str, str] | None:
    """``(function_id, volume_id)`` of one of the driver's export ids, None for any other id."""
    parts = export.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or not all(_ESCAPED.fullmatch(part) for part in parts[1:]):
        return None
    try:
        function_id, volume_id = (_unescape(part) for part in parts[1:])
    except UnicodeDecodeError:
        return None
    # one spelling per id: "_41" for "A" is not one of ours
    return (function_id, volume_id) if export_id(function_id, volume_id) == export else None


def node_name(volume_id: str) -> str:
    """The node name of the NBD client node of ``volume_id``."""
    return f"{PREFIX}-{hashlib.sha256(volume_id.encode()).hexdigest()[:_HASH_DIGITS]}"


def _escape(text: str) -> str:
    return "".join(chr(byte) if _KEPT.fullmatch(chr(byte)) else f"_{byte:02x}" for byte in text.encode())


def _unescape(text: str) -> str:
    data = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "_":
            data.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            data.append(ord(text[i]))
            i += 1
    return data.decode()
