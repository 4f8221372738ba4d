"""PCI Vital Product Data (the ``vpd`` file in sysfs): card serial numbers.

Layout (PCI Local Bus 3.0 §6.4 and appendix I)::

    0x82 len_lo len_hi  identifier string (product name)
    0x90 len_lo len_hi  VPD-R: read-only keywords, ends with RV (checksum)
    0x91 len_lo len_hi  VPD-W: read/write keywords (optional)
    0x78                end tag

A keyword is two ASCII characters, a one-byte length and its data. The first
data byte of ``RV`` makes the sum of every byte from the start of the VPD
through itself 0 mod 256. The card serial number is keyword ``SN``.

:func:`parse_vpd` never raises: a truncated or corrupt VPD is a result whose
``error`` says what is wrong, and whose fields are empty (none of them can be
trusted). :func:`encode_vpd` writes valid VPD, for fixtures and the lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TAG_ID_STRING, TAG_VPD_R, TAG_VPD_W, TAG_END = 0x82, 0x90, 0x91, 0x78
_LARGE_TAGS = {TAG_ID_STRING: "identifier string", TAG_VPD_R: "VPD-R", TAG_VPD_W: "VPD-W"}
KEYWORD_SERIAL, KEYWORD_CHECKSUM = "SN", "RV"


class _Corrupt(Exception):
    """Internal: why the bytes are not valid VPD."""


@dataclass(frozen=True)
class Vpd:
    """What a VPD says: product name, read-only keyword values, or why it could not be read."""

    name: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def serial(self) -> str:
        return self.fields.get(KEYWORD_SERIAL, "")


def parse_vpd(data: bytes) -> Vpd:
    """Parse VPD bytes (anything after the end tag is ignored); never raises."""
    try:
        return _parse(bytes(data))
    except _Corrupt as exc:
        return Vpd(error=f"VPD error: {exc}")


def _parse(data: bytes) -> Vpd:
    if not data:
        raise _Corrupt("the VPD is empty")
    name, fields, pos = "", {}, 0
    has_vpd_r = checksum_seen = False
    while True:
        if pos >= len(data):
            raise _Corrupt(f"truncated at byte {pos}: no end tag (0x78)")
        tag = data[pos]
        if tag == TAG_END:
            break
        if tag not in _LARGE_TAGS:
            raise _Corrupt(f"unexpected resource tag {tag:#04x} at byte {pos}")
        if pos + 3 > len(data):
            raise _Corrupt(f"truncated in the {_LARGE_TAGS[tag]} header at byte {pos}")
        start, end = pos + 3, pos + 3 + (data[pos + 1] | data[pos + 2] << 8)
        if end > len(data):
            raise _Corrupt(f"truncated: the {_LARGE_TAGS[tag]} at byte {pos} needs {end - start} bytes, "
                           f"{len(data) - start} left")
        if tag == TAG_ID_STRING:
            name = _text(data[start:end], "the identifier string")
        else:
            has_vpd_r = has_vpd_r or tag == TAG_VPD_R
            for keyword, value_at, length in _keywords(data, start, end, _LARGE_TAGS[tag]):
                if tag == TAG_VPD_R and keyword == KEYWORD_CHECKSUM:
                    _check_sum(data, value_at, length)
                    checksum_seen = True
                elif tag == TAG_VPD_R and not checksum_seen:
                    fields.setdefault(keyword, _text(data[value_at:value_at + length], f"keyword {keyword}"))
        pos = end
    if has_vpd_r and not checksum_seen:
        raise _Corrupt("the VPD-R section has no RV checksum")
    return Vpd(name=name, fields=fields)


def _keywords(data: bytes, start: int, end: int, section: str) -> list[tuple[str, int, int]]:
    """(keyword, offset of its value, length) for each keyword of one section."""
    found, pos = [], start
    while pos < end:
        if pos + 3 > end:
            raise _Corrupt(f"truncated keyword header at byte {pos} of the {section}")
        raw, length = data[pos:pos + 2], data[pos + 2]
        if not (raw.isascii() and raw.isalnum()):
            raise _Corrupt(f"bad keyword {raw!r} at byte {pos} of the {section}")
        if pos + 3 + length > end:
            raise _Corrupt(f"keyword {raw.decode()} at byte {pos} overruns the {section}")
        found.append((raw.decode(), pos + 3, length))
        pos += 3 + length
    return found


def _check_sum(data: bytes, value_at: int, length: int) -> None:
    if length < 1:
        raise _Corrupt("the RV keyword has no checksum byte")
    total = sum(data[:value_at + 1]) & 0xFF
    if total:
        raise _Corrupt(f"bad RV checksum (bytes up to it sum to {total:#04x}, not 0 mod 256)")


def _text(raw: bytes, what: str) -> str:
    raw = raw.rstrip(b"\x00 ")
    if not (raw.isascii() and raw.decode("ascii").isprintable()):
        raise _Corrupt(f"{what} is not printable ASCII")
    return raw.decode("ascii")


def encode_vpd(name: str, read_only: dict[str, str], read_write: dict[str, str] | None = None) -> bytes:
    """Valid VPD bytes: identifier string, VPD-R (with a correct RV), optional VPD-W, end tag."""
    out = bytearray(_resource(TAG_ID_STRING, name.encode("ascii")))
    body = b"".join(_keyword(key, value.encode("ascii")) for key, value in read_only.items())
    checksum_at = len(out) + 3 + len(body) + 3
    rv_length = 1 + (-(checksum_at + 1) % 4)  # reserved bytes end VPD-R on a dword, as cards do
    out += _resource(TAG_VPD_R, body + b"RV" + bytes([rv_length]) + bytes(rv_length))
    out[checksum_at] = -sum(out[:checksum_at]) & 0xFF
    if read_write:
        out += _resource(TAG_VPD_W, b"".join(_keyword(k, v.encode("ascii")) for k, v in read_write.items()))
    out.append(TAG_END)
    return bytes(out)


def _resource(tag: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"a VPD resource holds at most 65535 bytes, not {len(body)}")
    return bytes([tag, len(body) & 0xFF, len(body) >> 8]) + body


def _keyword(key: str, value: bytes) -> bytes:
    if len(key) != 2 or len(value) > 0xFF:
        raise ValueError(f"VPD keyword {key!r}: two characters and at most 255 bytes of data")
    return key.encode("ascii") + bytes([len(value)]) + value
