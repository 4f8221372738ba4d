"""Networks, subnets and ports, with address management (IPAM), MAC allocation and security groups."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dpustack.controller.netbackend import NetworkBackend, PortSpec, SubnetSpec
from dpustack.controller.services import security_groups
from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.db.models import Network, Port, Subnet
from dpustack.errors import Conflict, InvalidInput

MAC_PREFIX = "fa:16:3e"
_ALLOCATION_ATTEMPTS = 16


def parse_cidr(cidr: str, *, field: str = "subnet") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"'{cidr}' is not a valid CIDR: {exc}", field=field) from exc
    if network.num_addresses < 4:
        raise InvalidInput(f"subnet {cidr} is too small for a gateway and hosts", field=field)
    return network


def create_network(session: Session, caller: Caller, backend: NetworkBackend, *, name: str,
                   subnet: str | None) -> Network:
    ensure_unique_name(session, Network, name, caller.project_id, kind="network")
    cidr = parse_cidr(subnet) if subnet else None
    network = Network(name=name, project_id=caller.project_id)
    session.add(network)
    session.flush()
    if cidr is not None:
        session.add(Subnet(network_id=network.id, cidr=str(cidr), gateway_ip=str(next(cidr.hosts()))))
        session.flush()
    session.refresh(network)
    backend.ensure_network(network.id, network.name,
                           [SubnetSpec(s.id, s.cidr, s.gateway_ip) for s in network.subnets])
    return network


def get_network(session: Session, caller: Caller, ref: str, *, field: str = "network") -> Network:
    return find(session, Network, ref, caller, kind="network", field=field)


def list_networks(session: Session, caller: Caller) -> list[Network]:
    return list(session.scalars(scoped(select(Network), Network, caller).order_by(Network.created_at)))


def delete_network(session: Session, caller: Caller, backend: NetworkBackend, ref: str) -> None:
    network = get_network(session, caller, ref)
    port = session.scalars(select(Port.id).where(Port.network_id == network.id)).first()
    if port:
        raise Conflict(f"network '{network.name}' still has port {port}", field="network")
    session.delete(network)
    backend.delete_network(network.id)


def create_port(session: Session, caller: Caller, backend: NetworkBackend, network: Network, *, name: str = "",
                mac: str | None = None, auto_delete: bool = False, vnic_type: str = "normal",
                security_group_refs: list[str] | None = None) -> Port:
    """Create a port with a MAC, an address when the network has a subnet, and security groups
    (by name or id; none given: the project's `default` group).

    Unique constraints on MAC and (subnet, address) make concurrent
    allocations safe: a collision retries with the next candidate.
    """
    project_id = network.project_id if caller.is_admin else caller.project_id
    groups = security_groups.groups_for_port(session, backend, project_id, security_group_refs)
    subnet = network.subnets[0] if network.subnets else None
    for _ in range(_ALLOCATION_ATTEMPTS):
        candidate_mac = mac or _random_mac()
        address = _free_address(session, subnet) if subnet else None
        port = Port(name=name, project_id=project_id,
                    network_id=network.id, subnet_id=subnet.id if subnet else None, ip_address=address,
                    mac_address=candidate_mac, auto_delete=auto_delete, vnic_type=vnic_type,
                    security_groups=list(groups))
        try:
            with session.begin_nested():
                session.add(port)
                session.flush()
            backend.ensure_port(port_spec(port))
            return port
        except IntegrityError:
            if mac is not None and _mac_taken(session, mac):
                raise Conflict(f"MAC address {mac} is already in use", field="mac") from None
    raise Conflict(f"could not allocate an address on network '{network.name}'", field="network")


def _random_mac() -> str:
    return MAC_PREFIX + "".join(f":{random.randint(0, 255):02x}" for _ in range(3))


def _mac_taken(session: Session, mac: str) -> bool:
    return session.scalars(select(Port.id).where(Port.mac_address == mac)).first() is not None


def _free_address(session: Session, subnet: Subnet) -> str:
    cidr = ipaddress.ip_network(subnet.cidr)
    used = set(session.scalars(select(Port.ip_address).where(Port.subnet_id == subnet.id)))
    used.add(subnet.gateway_ip)
    for host in cidr.hosts():
        if str(host) not in used:
            return str(host)
    raise Conflict(f"subnet {subnet.cidr} has no free address", field="network")


def get_port(session: Session, caller: Caller, ref: str, *, field: str = "port") -> Port:
    return find(session, Port, ref, caller, kind="port", field=field)


def list_ports(session: Session, caller: Caller, *, instance_id: str | None = None,
               network_id: str | None = None) -> list[Port]:
    query = scoped(select(Port), Port, caller).order_by(Port.created_at)
    if instance_id:
        query = query.where(Port.instance_id == instance_id)
    if network_id:
        query = query.where(Port.network_id == network_id)
    return list(session.scalars(query))


def delete_port(session: Session, caller: Caller, backend: NetworkBackend, ref: str) -> None:
    port = get_port(session, caller, ref)
    if port.instance_id:
        raise Conflict(f"port {port.id} is attached to instance {port.instance_id}", field="port")
    remove_port(session, backend, port)


def remove_port(session: Session, backend: NetworkBackend, port: Port) -> None:
    session.delete(port)
    backend.delete_port(port.id)


def set_port_security_groups(session: Session, caller: Caller, backend: NetworkBackend, ref: str,
                             group_refs: list[str]) -> Port:
    """Replace a port's security groups (groups of the port's project, by name or id)."""
    port = get_port(session, caller, ref)
    session.refresh(port, with_for_update=True)  # two changes at once: the backend ends as the database
    port.security_groups = security_groups.groups_for_port(session, backend, port.project_id, group_refs)
    session.flush()
    backend.ensure_port(port_spec(port))
    return port


def port_spec(port: Port) -> PortSpec:
    return PortSpec(id=port.id, network_id=port.network_id, mac=port.mac_address, ip=port.ip_address,
                    subnet_id=port.subnet_id, requested_chassis=port.requested_chassis,
                    security_groups=tuple(group.id for group in port.security_groups))


def bind_port(backend: NetworkBackend, port: Port, *, host: str, profile: dict[str, Any],
              requested_chassis: str = "") -> None:
    """Record where a port is plugged (`binding:host_id`, `binding:profile`) and tell the backend."""
    port.binding_host_id = host
    port.binding_profile = profile
    port.requested_chassis = requested_chassis
    port.status = "ACTIVE"
    backend.ensure_port(port_spec(port))


def unbind_port(backend: NetworkBackend, port: Port) -> None:
    port.binding_host_id = ""
    port.binding_profile = {}
    port.requested_chassis = ""
    port.status = "DOWN"
    backend.ensure_port(port_spec(port))
