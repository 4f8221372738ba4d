"""The input rules both HTTP APIs share: what a resource name is, which MAC addresses a port may
have, and that no input holds a NUL character.

Each rule is defined here once (pydantic types the request schemas use, and
one dependency every route runs), so a bad value is a 400 naming its field
wherever it arrives.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import Request
from pydantic import AfterValidator, Field

from dpustack.errors import InvalidInput

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


# -- NUL characters -----------------------------------------------------------------
def _nul_in(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first string (value or key) in a JSON document that holds a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = (*path, str(key))
        if "\x00" in str(key):
            return where
        found = _nul_in(item, where)
        if found is not None:
            return found
    return None


def _refuse(field: str) -> InvalidInput:
    return InvalidInput(f"{field}: NUL characters are not allowed", field=field)


async def refuse_nul_characters(request: Request) -> None:
    """Refuse (400 naming it) a path or query parameter or a JSON body string that holds a NUL character.

    No dpustack input has a use for one, and PostgreSQL cannot store one: it
    would otherwise fail deep in a query. Each app runs this before every route.
    """
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if isinstance(value, str) and "\x00" in value:
            raise _refuse(name)
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return  # no JSON body (an image upload streams raw bytes: never read it here)
    body = await request.body()
    if b"\\u0000" not in body:  # in JSON a NUL can only be written as this escape
        return
    try:
        document = json.loads(body)
    except ValueError:
        return  # not JSON: the route answers that, naming the body
    found = _nul_in(document)
    if found is not None:
        raise _refuse(".".join(found) or "body")
