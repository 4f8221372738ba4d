"""Device-spec match values, key by key: addresses and hex ids are checked when the agent starts.

`address` (and `parent_addr`) take Nova's glob form
``[[[[domain]:]bus]:][slot][.[function]]`` — each field a hex number, `*` or
left out (any), e.g. ``0000:05:00.3``, ``*:0a:00.*``, ``0a:00.1`` — where a
field may also hold `*` among hex digits (``0000:05:0*``). A value with other
regular-expression syntax (``0000:05:00.[3-6]``) is the simplified regular
expression of the whole canonical address. Hex ids (``vendor_id``,
``product_id``, the subsystem ids, ``class_code``) are a hex number of at most
their width (``15b3``, ``0xa``) or a pattern. Whatever form, a value that can
never match a real address or id is refused, naming its field.
"""

from __future__ import annotations

import re

from dpustack.errors import InvalidInput
from dpustack.pci import reachable
from dpustack.pci.address import MAX_SLOT
from dpustack.pci.match import HEX_WIDTHS, compile_value

ADDRESS_KEYS = ("address", "parent_addr")
_GLOB = re.compile(r"^[0-9A-Za-z:.*]+$")      # no regex syntax beyond `.` and `*`: read as Nova's glob
_NUMBER = re.compile(r"^(?:0[xX])?([0-9a-fA-F]+)$")
_FIELDS = (("domain", 0xFFFFFFFF, 4), ("bus", 0xFF, 2), ("slot", MAX_SLOT, 2))
_MAX_FUNCTION = 7


def compile_match_value(key: str, value: str, *, field: str) -> re.Pattern[str]:
    """The compiled pattern for one `match` value; InvalidInput (naming `field`) if it is malformed."""
    text = value.strip()
    if key in ADDRESS_KEYS and text != "*":  # a lone `*` also matches a missing parent ("")
        return _address(text, field)
    if key in HEX_WIDTHS and _NUMBER.match(text):
        digits = _NUMBER.match(text).group(1)  # type: ignore[union-attr]
        if len(digits) > HEX_WIDTHS[key]:
            raise InvalidInput(f"{field}: {value!r} is not a {HEX_WIDTHS[key]}-digit hex id", field=field)
    elif key in HEX_WIDTHS and re.fullmatch(r"[0-9A-Za-z]+", text):
        raise InvalidInput(f"{field}: {value!r} is not a {HEX_WIDTHS[key]}-digit hex id (non-hex digits)",
                           field=field)
    pattern = _compile(text, key, field)
    if key in HEX_WIDTHS and not reachable.can_match(pattern, reachable.hex_id(HEX_WIDTHS[key])):
        raise InvalidInput(f"{field}: {value!r} can never match a {HEX_WIDTHS[key]}-digit hex id", field=field)
    return pattern


def _compile(text: str, key: str, field: str) -> re.Pattern[str]:
    try:
        return compile_value(text, key=key)
    except re.error as exc:
        raise InvalidInput(f"{field}: {text!r} is not a valid pattern ({exc.msg})", field=field) from exc


def _address(text: str, field: str) -> re.Pattern[str]:
    if _GLOB.match(text):
        return re.compile(_glob_regex(text, field))
    pattern = _compile(text, "address", field)
    if not reachable.can_match(pattern, reachable.ADDRESS):
        raise InvalidInput(f"{field}: {text!r} can never match a PCI address (dddd:bb:ss.f)", field=field)
    return pattern


def _glob_regex(text: str, field: str) -> str:
    """Nova's glob address as a regular expression over canonical addresses."""
    head, dot, function = text.partition(".")
    parts = head.split(":") if head else []
    if len(parts) > 3 or "." in function:
        raise InvalidInput(f"{field}: {text!r} has too many fields (expected [[[[domain]:]bus]:][slot][.[function]])",
                           field=field)
    parts = [""] * (3 - len(parts)) + parts
    out = [_field(name, part, text, field, high, width) for (name, high, width), part in zip(_FIELDS, parts)]
    out.append(_field("function", function, text, field, _MAX_FUNCTION, 1))
    return f"{out[0]}:{out[1]}:{out[2]}\\.{out[3]}"


def _field(name: str, part: str, text: str, field: str, high: int, width: int) -> str:
    any_digits = "[0-9a-f]+" if name == "domain" else f"[0-9a-f]{{{width}}}"
    if part in ("", "*"):
        return any_digits
    number = _NUMBER.match(part)
    if number:
        value = int(number.group(1), 16)
        if value > high:
            raise InvalidInput(f"{field}: {name} {part!r} of {text!r} is above {high:#x}", field=field)
        return f"{value:0{width}x}"
    if not re.fullmatch(r"[0-9a-fA-F*]+", part):
        raise InvalidInput(f"{field}: {name} {part!r} of {text!r} is not a hex number", field=field)
    partial = part.lower().replace("*", "[0-9a-f]*")
    values = range(high + 1) if name != "domain" else range(0)  # a domain is too wide to list: taken as given
    if values and not any(re.fullmatch(partial, f"{v:0{width}x}") for v in values):
        raise InvalidInput(f"{field}: {name} {part!r} of {text!r} matches no {name} (at most {high:#x})",
                           field=field)
    return partial
