"""SwitchDriver: the DPU's Open vSwitch, where representors are plugged.

A port carries ``external_ids``; ``iface-id`` names the cloud port (the
network controller keys its flows on it) and ``attached-mac`` its MAC.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dpustack.drivers.base import Driver
from dpustack.errors import DriverError


@dataclass(frozen=True)
class SwitchPort:
    """One port on one bridge."""

    bridge: str
    name: str
    external_ids: dict[str, str] = field(default_factory=dict)


class SwitchDriver(Driver):
    """Add, remove and list ports on the switch's bridges."""

    interface = "switch"

    @abc.abstractmethod
    def add_port(self, bridge: str, port_name: str, external_ids: dict[str, str], *,
                 may_exist: bool = True) -> SwitchPort:
        """Plug ``port_name`` into ``bridge``.

        When the port is already there and ``may_exist``, its external_ids are
        updated to include ``external_ids``; a port of that name on another
        bridge is an error.
        """

    def plug_many(self, bridge: str, ports: Mapping[str, Mapping[str, str]], *,
                  may_exist: bool = True) -> list[SwitchPort]:
        """Plug every ``{port_name: external_ids}`` into ``bridge``, as :meth:`add_port` does each.

        This default plugs them one by one and stops at the first failure;
        a driver that can batch (``ovs``: one transaction, all or nothing)
        overrides it. A re-sync of many ports goes through here.
        """
        return [self.add_port(bridge, name, dict(external_ids), may_exist=may_exist)
                for name, external_ids in ports.items()]

    @abc.abstractmethod
    def del_port(self, bridge: str, port_name: str, *, if_exists: bool = True) -> None:
        """Unplug ``port_name`` from ``bridge``; a missing port is fine when ``if_exists``."""

    def unplug_many(self, bridge: str, port_names: Iterable[str], *, if_exists: bool = True) -> None:
        """Unplug every port of ``port_names`` from ``bridge``, as :meth:`del_port` does each.

        This default unplugs them one by one and stops at the first failure;
        the ``ovs`` driver does it in one transaction, all or nothing.
        """
        for name in port_names:
            self.del_port(bridge, name, if_exists=if_exists)

    @abc.abstractmethod
    def list_ports(self, bridge: str | None = None) -> list[SwitchPort]:
        """Ports of one bridge, or of every bridge."""

    def set_packet_rate(self, bridge: str, port_name: str, pps: int | None) -> None:
        """Limit what ``port_name`` sends into ``bridge`` to ``pps`` packets/s; ``None`` removes the limit.

        Optional: this default raises DriverError. The limit is tied to the
        port as plugged now; after a re-plug (or anything that wipes it, such
        as ovn-controller reconnecting on ``ovs``) it must be set again, which
        the agent's reconcile does when :meth:`packet_rate` disagrees.
        """
        raise DriverError(f"switch.set_packet_rate: the {type(self).__name__} driver cannot limit packet rates")

    def packet_rate(self, bridge: str, port_name: str) -> int | None:
        """The packet-rate limit in force on the port as plugged now (None: none)."""
        raise DriverError(f"switch.packet_rate: the {type(self).__name__} driver cannot limit packet rates")
