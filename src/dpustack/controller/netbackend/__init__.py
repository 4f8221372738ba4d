"""Where networks and ports really exist: the network backend interface.

`NullBackend` keeps everything in the controller database only (the memory
lab); `OvnBackend` (netbackend.ovn) writes the OVN northbound database:
a logical switch per network, native DHCP per subnet, a logical switch
port per port, a port group with ACLs per security group. Every call is
idempotent and level-based (it states the whole wanted state of one
object), so a retried operation converges.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SubnetSpec:
    id: str
    cidr: str
    gateway_ip: str
    # DNS servers handed out by DHCP; none: the gateway.
    dns_nameservers: tuple[str, ...] = ()
    # False: no DHCP service on the subnet (its ports get addresses but no DHCP options).
    enable_dhcp: bool = True


@dataclass(frozen=True)
class PortSpec:
    id: str
    network_id: str
    mac: str
    ip: str | None
    subnet_id: str | None
    requested_chassis: str = ""
    external_ids: dict[str, str] = field(default_factory=dict)
    # Ids of the port's security groups; none means the port is not filtered at all.
    security_groups: tuple[str, ...] = ()
    # Limits on what the port's instance sends ; None: unlimited.
    qos_bps: int | None = None
    qos_pps: int | None = None


@dataclass(frozen=True)
class RuleSpec:
    """One allow rule of a security group, as stored (see services.security_groups)."""

    id: str
    direction: str                  # "ingress" | "egress"
    ethertype: str = "IPv4"         # "IPv4" | "IPv6"
    protocol: str | None = None     # "tcp" | "udp" | "icmp" | None: any
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


@dataclass(frozen=True)
class SecurityGroupSpec:
    id: str
    name: str
    rules: tuple[RuleSpec, ...] = ()


class NetworkBackend(abc.ABC):
    """One implementation per network technology."""

    name = "abstract"

    @abc.abstractmethod
    def ensure_network(self, network_id: str, name: str, subnets: list[SubnetSpec]) -> None: ...

    @abc.abstractmethod
    def delete_network(self, network_id: str) -> None: ...

    @abc.abstractmethod
    def ensure_port(self, port: PortSpec) -> None:
        """Make the port exist as described, in exactly the security groups it lists."""

    @abc.abstractmethod
    def delete_port(self, port_id: str) -> None: ...

    @abc.abstractmethod
    def ensure_security_group(self, group: SecurityGroupSpec) -> None:
        """Make the group exist with exactly these rules (rules not listed are removed)."""

    @abc.abstractmethod
    def delete_security_group(self, group_id: str) -> None: ...

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

    def ensure_security_group(self, group: SecurityGroupSpec) -> None:
        return None

    def delete_security_group(self, group_id: str) -> None:
        return None
