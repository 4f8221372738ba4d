"""Networks, subnets and ports, with address management (IPAM), MAC allocation and security groups."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dpustack.controller import orchestrator
from dpustack.controller.netbackend import NetworkBackend, PortSpec, SubnetSpec
from dpustack.controller.services import security_groups
from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.db.models import Network, Operation, Port, Subnet
from dpustack.errors import Conflict, InvalidInput, NotFound

MAC_PREFIX = "fa:16:3e"
_ALLOCATION_ATTEMPTS = 16
MAX_DNS_NAMESERVERS = 5


def parse_cidr(cidr: str, *, field: str = "subnet") -> ipaddress.IPv4Network:
    """An IPv4 CIDR with room for a gateway and hosts (IPv6 subnets are not supported yet)."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"'{cidr}' is not a valid CIDR: {exc}", field=field) from exc
    if not isinstance(network, ipaddress.IPv4Network):
        raise InvalidInput(f"subnet {cidr} is IPv6; only IPv4 subnets are supported", field=field)
    if network.num_addresses < 4:
        raise InvalidInput(f"subnet {cidr} is too small for a gateway and hosts", field=field)
    return network


def create_network(session: Session, caller: Caller, backend: NetworkBackend, *, name: str,
                   subnet: str | None) -> Network:
    """A network, and with `subnet` (a CIDR) its first subnet, made as `create_subnet` makes one."""
    ensure_unique_name(session, Network, name, caller.project_id, kind="network")
    network = Network(name=name, project_id=caller.project_id)
    session.add(network)
    session.flush()
    if subnet is not None:  # a bad CIDR rolls the network back with the transaction
        _add_subnet(session, network, cidr=subnet, cidr_field="subnet")
    session.refresh(network)
    sync_network(backend, network)
    return network


def get_network(session: Session, caller: Caller, ref: str, *, field: str = "network") -> Network:
    return find(session, Network, ref, caller, kind="network", field=field)


def list_networks(session: Session, caller: Caller) -> list[Network]:
    return list(session.scalars(scoped(select(Network), Network, caller).order_by(Network.created_at)))


def sync_network(backend: NetworkBackend, network: Network) -> None:
    """State the network and all its subnets to the backend (which drops what is no longer listed)."""
    backend.ensure_network(network.id, network.name, [subnet_spec(s) for s in network.subnets])


def subnet_spec(subnet: Subnet) -> SubnetSpec:
    return SubnetSpec(id=subnet.id, cidr=subnet.cidr, gateway_ip=subnet.gateway_ip,
                      dns_nameservers=tuple(subnet.dns_nameservers or ()), enable_dhcp=subnet.enable_dhcp)


def delete_network(session: Session, caller: Caller, backend: NetworkBackend, ref: str) -> None:
    network = get_network(session, caller, ref)
    port = session.scalars(select(Port.id).where(Port.network_id == network.id)).first()
    if port:
        raise Conflict(f"network '{network.name}' still has port {port}", field="network")
    session.delete(network)
    backend.delete_network(network.id)


# -- subnets -------------------------------------------------------------------------
def create_subnet(session: Session, caller: Caller, backend: NetworkBackend, network: Network, *, cidr: str,
                  name: str = "", gateway_ip: str | None = None, dns_nameservers: list[str] | None = None,
                  enable_dhcp: bool = True) -> Subnet:
    """Add an IPv4 subnet to a network and re-sync the network (and so its DHCP) with the backend.

    The gateway defaults to the first host address; a CIDR overlapping
    another subnet of the network is a conflict.
    """
    session.refresh(network, with_for_update=True)  # two subnets at once: the overlap check sees both
    if name:
        _ensure_unique_subnet_name(session, network.project_id, name)
    subnet = _add_subnet(session, network, cidr=cidr, cidr_field="cidr", name=name, gateway_ip=gateway_ip,
                         dns_nameservers=dns_nameservers or [], enable_dhcp=enable_dhcp)
    session.refresh(network)
    sync_network(backend, network)
    return subnet


def _add_subnet(session: Session, network: Network, *, cidr: str, cidr_field: str, name: str = "",
                gateway_ip: str | None = None, dns_nameservers: list[str] | tuple[str, ...] = (),
                enable_dhcp: bool = True) -> Subnet:
    block = parse_cidr(cidr, field=cidr_field)
    for other in network.subnets:
        if ipaddress.ip_network(other.cidr).overlaps(block):
            raise Conflict(f"{block} overlaps subnet {other.cidr} of network '{network.name}'", field=cidr_field)
    gateway = _gateway(block, gateway_ip) if gateway_ip is not None else next(block.hosts())
    subnet = Subnet(network_id=network.id, cidr=str(block), gateway_ip=str(gateway), name=name,
                    dns_nameservers=_nameservers(dns_nameservers), enable_dhcp=enable_dhcp)
    session.add(subnet)
    session.flush()
    return subnet


def _gateway(block: ipaddress.IPv4Network, text: str) -> ipaddress.IPv4Address:
    try:
        gateway = ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise InvalidInput(f"'{text}' is not an IPv4 address", field="gateway_ip") from exc
    if gateway not in block:
        raise InvalidInput(f"gateway {gateway} is not inside {block}", field="gateway_ip")
    if gateway in (block.network_address, block.broadcast_address):
        raise InvalidInput(f"gateway {gateway} is the network or broadcast address of {block}", field="gateway_ip")
    return gateway


def _nameservers(texts: list[str] | tuple[str, ...]) -> list[str]:
    if len(texts) > MAX_DNS_NAMESERVERS:
        raise InvalidInput(f"at most {MAX_DNS_NAMESERVERS} DNS servers", field="dns_nameservers")
    servers: list[str] = []
    for index, text in enumerate(texts):
        try:
            server = str(ipaddress.IPv4Address(text))
        except ValueError as exc:
            raise InvalidInput(f"'{text}' is not an IPv4 address", field=f"dns_nameservers.{index}") from exc
        if server in servers:
            raise InvalidInput(f"DNS server {server} given twice", field=f"dns_nameservers.{index}")
        servers.append(server)
    return servers


def _ensure_unique_subnet_name(session: Session, project_id: str, name: str) -> None:
    """Subnet names are unique per project (like other names), so they can be used in place of ids."""
    query = select(Subnet.id).join(Network, Subnet.network_id == Network.id).where(
        Subnet.name == name, Network.project_id == project_id)
    if session.scalars(query).first() is not None:
        raise Conflict(f"a subnet named '{name}' already exists", field="name")


def _visible_subnets(caller: Caller) -> Any:
    """Subnets have no project of their own: they are the project's whose network holds them."""
    if caller.is_admin:
        return None
    return Subnet.network_id.in_(select(Network.id).where(Network.project_id == caller.project_id))


def get_subnet(session: Session, caller: Caller, ref: str, *, field: str = "subnet") -> Subnet:
    return find(session, Subnet, ref, None, kind="subnet", field=field, extra=_visible_subnets(caller))


def list_subnets(session: Session, caller: Caller, *, network_id: str | None = None) -> list[Subnet]:
    query = select(Subnet).order_by(Subnet.created_at)
    visible = _visible_subnets(caller)
    if visible is not None:
        query = query.where(visible)
    if network_id:
        query = query.where(Subnet.network_id == network_id)
    return list(session.scalars(query))


def delete_subnet(session: Session, caller: Caller, backend: NetworkBackend, ref: str) -> None:
    """Delete a subnet no port has an address on, and drop its DHCP service from the backend."""
    subnet = get_subnet(session, caller, ref)
    network = session.get_one(Network, subnet.network_id)
    # A port given an address on it meanwhile makes the delete fail on the foreign key (a 409).
    port = session.scalars(select(Port.id).where(Port.subnet_id == subnet.id)).first()
    if port:
        raise Conflict(f"subnet {subnet.cidr} still has port {port}", field="subnet")
    session.delete(subnet)
    session.flush()
    session.refresh(network)
    sync_network(backend, network)


# -- ports ---------------------------------------------------------------------------
def create_port(session: Session, caller: Caller, backend: NetworkBackend, network: Network, *, name: str = "",
                mac: str | None = None, auto_delete: bool = False, vnic_type: str = "normal",
                security_group_refs: list[str] | None = None) -> Port:
    """Create a port with a MAC, an address when the network has subnets, and security groups
    (by name or id; none given: the project's `default` group).

    The address comes from the oldest subnet with a free one. Unique
    constraints on MAC and (subnet, address) make concurrent allocations
    safe: a collision retries with the next candidate.
    """
    project_id = network.project_id if caller.is_admin else caller.project_id
    groups = security_groups.groups_for_port(session, backend, project_id, security_group_refs)
    for _ in range(_ALLOCATION_ATTEMPTS):
        candidate_mac = mac or _random_mac()
        subnet, address = _free_address(session, network)
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


def _free_address(session: Session, network: Network) -> tuple[Subnet | None, str | None]:
    """The first free host address of the network's subnets, oldest subnet first; (None, None) without subnets."""
    if not network.subnets:
        return None, None
    for subnet in network.subnets:
        used = set(session.scalars(select(Port.ip_address).where(Port.subnet_id == subnet.id)))
        used.add(subnet.gateway_ip)
        for host in ipaddress.ip_network(subnet.cidr).hosts():
            if str(host) not in used:
                return subnet, str(host)
    cidrs = ", ".join(subnet.cidr for subnet in network.subnets)
    raise Conflict(f"network '{network.name}' has no free address (subnets {cidrs})", field="network")


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


# -- port QoS (limits on what a port sends) -----------------------------------------
# The largest bit rate OVN's QoS table can hold (rate: 1-4294967295 kbit/s).
MAX_QOS_BPS = 4_294_967_295_000
# The largest packet rate an OpenFlow meter band holds.
MAX_QOS_PPS = 4_294_967_295
#: the operation that changes a port's limits (controller/workflows/port_qos.py)
QOS_ACTION = "set_port_qos"
_ACTIVE = ("pending", "running")


def set_port_qos(session: Session, caller: Caller, ref: str, *, bps: int | None, pps: int | None) -> Operation:
    """Accept new limits on what a port's instance sends (None: unlimited) as an operation.

    Checked here, in the caller's transaction, before anything changes: another project's port is a
    404 (whatever the body), a limit out of range a 400, a second change of the same port while one
    runs a 409. The operation (workflows/port_qos.py) records the limits and states `bps` to the
    network backend, then has the agent of the node the port is bound to apply a changed `pps`; if
    either refuses, the port's limits are put back and the operation's error says who refused.
    """
    port = get_port(session, caller, ref)
    if bps is not None and not 1 <= bps <= MAX_QOS_BPS:
        raise InvalidInput(f"bps must be 1-{MAX_QOS_BPS} bits per second, not {bps}", field="bps")
    if pps is not None and not 1 <= pps <= MAX_QOS_PPS:
        raise InvalidInput(f"pps must be 1-{MAX_QOS_PPS} packets per second, not {pps}", field="pps")
    session.refresh(port, with_for_update=True)  # two changes at once: the second sees the first's operation
    running = _qos_change_of(session, port.id)
    if running is not None:
        raise Conflict(f"port {port.id} is busy (operation {running} changes its limits); try again when it ends",
                       field="port")
    return orchestrator.submit(session, action=QOS_ACTION, project_id=port.project_id, instance_id=None,
                               params={"port_id": port.id, "bps": bps, "pps": pps})


def _qos_change_of(session: Session, port_id: str) -> str | None:
    """The id of the port's QoS operation that has not ended yet, if any."""
    active = session.scalars(select(Operation).where(Operation.action == QOS_ACTION,
                                                     Operation.status.in_(_ACTIVE)))
    return next((op.id for op in active if op.params.get("port_id") == port_id), None)


def lock_port(session: Session, port_id: str) -> Port:
    """The port, its row locked until the transaction ends (404 naming `port` once it is deleted)."""
    port = session.get(Port, port_id, with_for_update=True)
    if port is None:
        raise NotFound(f"port {port_id} was deleted", field="port")
    return port


def state_limits(backend: NetworkBackend, port: Port, *, bps: int | None, pps: int | None) -> None:
    """Record a port's limits and state them to the backend (its QoS row for `bps`), in the caller's
    transaction: if the backend refuses, the caller's rollback keeps the old record."""
    port.qos_bps, port.qos_pps = bps, pps
    backend.ensure_port(port_spec(port))


def port_spec(port: Port) -> PortSpec:
    return PortSpec(id=port.id, network_id=port.network_id, mac=port.mac_address, ip=port.ip_address,
                    subnet_id=port.subnet_id, requested_chassis=port.requested_chassis,
                    security_groups=tuple(group.id for group in port.security_groups),
                    qos_bps=port.qos_bps, qos_pps=port.qos_pps)


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
