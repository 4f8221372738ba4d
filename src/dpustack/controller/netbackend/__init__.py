"""Where networks and ports really exist: the network backend interface.

`NullBackend` keeps everything in the controller database only (the memory
lab); `OvnBackend` (netbackend.ovn) writes the OVN northbound database:
a logical switch per network, native DHCP per subnet, a logical switch
port per port. Every call is idempotent, so a retried operation converges.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SubnetSpec:
    id: str
    cidr: str
    gateway_ip: str


@dataclass(frozen=True)
class PortSpec:
    id: str
    network_id: str
    mac: str
    ip: str | None
    subnet_id: str | None
    requested_chassis: str = ""
    external_ids: dict[str, str] = field(default_factory=dict)


class NetworkBackend(abc.ABC):
    """One implementation per network technology."""

    name = "abstract"

    @abc.abstractmethod
    def ensure_network(self, network_id: str, name: str, subnets: list[SubnetSpec]) -> None: ...

    @abc.abstractmethod
    def delete_network(self, network_id: str) -> None: ...

    @abc.abstractmethod
    def ensure_port(self, port: PortSpec) -> None: ...

    @abc.abstractmethod
    def delete_port(self, port_id: str) -> None: ...

    def close(self) -> None:
        """Release connections; the default has none."""


class NullBackend(NetworkBackend):
    """No data plane: networks and ports live in the controller database only."""

    name = "none"

    def ensure_network(self, network_id: str, name: str, subnets: list[SubnetSpec]) -> None:
        return None

    def delete_network(self, network_id: str) -> None:
        return None

    def ensure_port(self, port: PortSpec) -> None:
        return None

    def delete_port(self, port_id: str) -> None:
        return None
