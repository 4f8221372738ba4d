"""The root of every driver interface."""

from __future__ import annotations

import abc
from typing import ClassVar

from dpustack.drivers.options import DriverOptions


class Driver(abc.ABC):
    """A driver for one hardware concern of one node.

    An implementation declares the options it reads from agent.toml (``options``, the model of its
    ``[<interface>.<name>]`` table, see :mod:`dpustack.drivers.options`); the agent validates them
    when it loads the driver and passes them to the constructor as keyword arguments.
    """

    #: entry-point group suffix, e.g. ``"functions"``; set by each interface.
    interface: ClassVar[str] = ""
    #: the interface's tables that several implementations share, by dotted agent.toml path
    #: (``"bmc.host"``), each with its model; validated whenever present
    shared_tables: ClassVar[dict[str, type[DriverOptions]]] = {}
    #: the model of the implementation's own table, ``[<interface>.<name>]``
    options: ClassVar[type[DriverOptions]] = DriverOptions
    #: the shared tables (keys of ``shared_tables``) whose fields the implementation also takes
    shared_options: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """Check cheaply, without side effects, that the driver can work.

        Raises :class:`dpustack.errors.DriverError` naming what is wrong.
        """

    def close(self) -> None:
        """Release what the driver holds open (a connection); the next call reopens it. Default: nothing."""
