"""Value types the controller↔agent messages share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: An id the controller gives an instance, port or volume (and the agent a function): safe in a URL path.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]

#: The largest count (CPUs, MiB, ...) the controller's database columns (32-bit) hold.
MAX_COUNT = 2**31 - 1

#: The largest packet rate an OpenFlow meter band holds.
MAX_PACKET_RATE = 0xFFFFFFFF
PacketRate = Annotated[int | None, Field(None, ge=1, le=MAX_PACKET_RATE,
                                         description="packets per second; null: none")]


class Request(BaseModel):
    """A request body: a field the receiver does not know is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")
