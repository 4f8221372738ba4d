"""The input rules both HTTP APIs' schemas share: what a resource name is and which MAC addresses a
port may have.

Each rule is defined here once, as a pydantic type the request schemas use, so a
bad value is a 400 naming its field wherever it arrives. (That no input holds a
NUL character is a dependency every route runs: `dpustack.web.nul_characters`.)
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

# -- names --------------------------------------------------------------------------
#: Letters, digits, '.', '_' and '-', starting with a letter or digit: printable, no blanks and no
#: control characters, safe in a URL path, a CLI argument and a table cell, where names stand for ids.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_MAX_LENGTH = 255
_NAME_HELP = f"1-{NAME_MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit"

#: The name of a resource that must have one.
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=f"^{NAME_PATTERN}$",
                            description=_NAME_HELP)]
#: The name of a resource whose name is optional: empty, or a `Name`.
OptionalName = Annotated[str, Field(max_length=NAME_MAX_LENGTH, pattern=f"^({NAME_PATTERN})?$",
                                    description=f"empty, or {_NAME_HELP}")]


# -- MAC addresses ------------------------------------------------------------------
_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def unicast_mac(value: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` or ``AA-BB-..`` as ``aa:bb:cc:dd:ee:ff``, if a port may have it.

    A port's MAC is a source address: broadcast, multicast (the group bit, the
    lowest bit of the first octet, set) and all zeros are refused (ValueError).
    """
    text = value.strip().lower()
    if not _MAC.match(text):
        raise ValueError(f"{value!r} is not a unicast MAC address like fa:16:3e:12:34:56")
    mac = text.replace("-", ":")
    if mac == "ff:ff:ff:ff:ff:ff":
        raise ValueError(f"{mac} is the broadcast address, not a unicast MAC address")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{mac} is a multicast address (group bit set), not a unicast MAC address")
    if mac == "00:00:00:00:00:00":
        raise ValueError(f"{mac} is the null address, not a unicast MAC address")
    return mac


#: A port's MAC address, answered in lower-case colon form.
UnicastMac = Annotated[str, AfterValidator(unicast_mac),
                       Field(description="a unicast MAC address, aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff")]
