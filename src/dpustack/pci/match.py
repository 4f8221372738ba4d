"""Simplified regular expressions, as device filters and PCI flavors write them.

A value is a regular expression matched against the whole property, with
one simplification: a `*` that does not follow `.` (or another
quantifiable atom) means "any characters", so `*`, `0000:0a:*` and
`000[1-2]` all read as written. Hex IDs compare case-insensitively and may
carry a `0x` prefix; a plain hex number is zero-padded (`0xa` is `000a`).
Addresses and tag values (`physical_network`, `remote_managed`, `trusted`,
`e.*`) compare case-insensitively too, as Nova compares tags.
"""

from __future__ import annotations

import re
from functools import lru_cache

HEX_WIDTHS = {"vendor_id": 4, "product_id": 4, "subsystem_vendor_id": 4, "subsystem_device_id": 4,
              "class_code": 6}
_HEX_KEYS = set(HEX_WIDTHS)
_TAG_KEYS = {"physical_network", "remote_managed", "trusted"}


def ignores_case(key: str) -> bool:
    """Hex ids, addresses and tags compare case-insensitively; names such as `devname` or `driver` do not."""
    return key in _HEX_KEYS or key in _TAG_KEYS or key.startswith("e.") or key in ("address", "parent_addr")


def _expand_stars(value: str) -> str:
    out = []
    for index, char in enumerate(value):
        if char == "*" and (index == 0 or value[index - 1] not in ".)]}\\"):
            out.append(".*")
        else:
            out.append(char)
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_value(value: str, *, key: str = "") -> re.Pattern[str]:
    """Compile one filter or flavor value; raises re.error on a bad expression."""
    text = value.strip()
    if key in _HEX_KEYS:
        text = re.sub(r"^0[xX]", "", text)
        if re.fullmatch(r"[0-9a-fA-F]+", text):  # a plain number: "0xa" names product "000a"
            text = text.lower().zfill(HEX_WIDTHS[key])
    return re.compile(_expand_stars(text), re.IGNORECASE if ignores_case(key) else 0)


def normalise(key: str, actual: str) -> str:
    if key in _HEX_KEYS:
        return re.sub(r"^0[xX]", "", actual).lower()
    return actual


def value_matches(pattern: str, actual: str | None, *, key: str = "") -> bool:
    """Whether `actual` (a device's property) matches the simplified expression `pattern`."""
    if actual is None:
        return False
    return compile_value(pattern, key=key).fullmatch(normalise(key, actual)) is not None
