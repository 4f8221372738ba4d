"""The root of every driver interface."""

from __future__ import annotations

import abc


class Driver(abc.ABC):
    """A driver for one hardware concern of one node."""

    #: entry-point group suffix, e.g. ``"functions"``; set by each interface.
    interface: str = ""

    def validate(self) -> None:
        """Check cheaply, without side effects, that the driver can work.

        Raises :class:`dpustack.errors.DriverError` naming what is wrong.
        """
