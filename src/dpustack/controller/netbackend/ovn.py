"""The OVN backend: networks, subnets and ports in the OVN northbound database (ovsdbapp).

Names: logical switch `dps-<network id>`, logical switch port `<port id>`
(what agents set as `external_ids:iface-id`, so ovn-controller binds it).
Each subnet with DHCP on gets native DHCP options, among them an on-link
classless route to the metadata address; each network has a metadata
localport (see dpustack.metadata_port) that every DPU agent plugs on its chassis.

Security groups (as Neutron's OVN driver does them): a port group
`pg_<group id>` per group whose ACLs allow, with conntrack (`allow-related`,
priority 1002), what the rules allow; every filtered port is also in the
shared port group `pg_dpustack_drop`, whose priority-1001 ACLs drop all
other IP traffic. A rule naming a remote group matches `$pg_<id>_ip4`, the
address set ovn-northd derives from that port group's ports.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import uuid
from typing import Any

from ovsdbapp import exceptions as ovsdb_exceptions
from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.ovn_northbound import impl_idl

from dpustack import metadata_port
from dpustack.controller.netbackend import NetworkBackend, PortSpec, RuleSpec, SecurityGroupSpec, SubnetSpec
from dpustack.errors import DriverError

log = logging.getLogger(__name__)

METADATA_CIDR = f"{metadata_port.METADATA_IP}/32"
DHCP_SERVER_MAC = "fa:16:3e:00:00:01"
MTU = 1442  # Geneve overhead on a 1500-byte underlay
LEASE_SECONDS = 43200
EXT_NETWORK, EXT_SUBNET, EXT_PORT = "dpustack:network_id", "dpustack:subnet_id", "dpustack:port_id"
EXT_SECURITY_GROUP, EXT_RULE = "dpustack:security_group_id", "dpustack:security_group_rule_id"

ACL_PRIORITY_ALLOW, ACL_PRIORITY_DROP = 1002, 1001
DROP_PORT_GROUP = "pg_dpustack_drop"
OVN_DIRECTION = {"ingress": "to-lport", "egress": "from-lport"}
IP_VERSION = {"IPv4": ("ip4", "icmp4"), "IPv6": ("ip6", "icmp6")}
# What the drop group holds for every filtered port: (direction, priority, match, action).
# DHCP requests pass whatever the egress rules say, as in Neutron's iptables driver
# (ovn-northd itself lets the replies of native DHCP through, and ARP is not IP).
DROP_ACLS = (
    ("from-lport", ACL_PRIORITY_DROP, f"inport == @{DROP_PORT_GROUP} && ip", "drop"),
    ("to-lport", ACL_PRIORITY_DROP, f"outport == @{DROP_PORT_GROUP} && ip", "drop"),
    ("from-lport", ACL_PRIORITY_ALLOW,
     f"inport == @{DROP_PORT_GROUP} && ip4 && udp && udp.src == 68 && udp.dst == 67", "allow"),
)


def switch_name(network_id: str) -> str:
    return f"dps-{network_id}"


def port_group_name(group_id: str) -> str:
    """A valid OVN port group name (and address set prefix): letters, digits and underscores."""
    return "pg_" + group_id.replace("-", "_")


def acl_match(group_id: str, rule: RuleSpec) -> str:
    """The ACL match of one rule, e.g. `outport == @pg_x && ip4 && ip4.src == 10.0.0.0/8 && tcp && tcp.dst == 22`."""
    ingress = rule.direction == "ingress"
    ip, icmp = IP_VERSION[rule.ethertype]
    parts = [f"{'outport' if ingress else 'inport'} == @{port_group_name(group_id)}", ip]
    remote = f"{ip}.{'src' if ingress else 'dst'}"
    if rule.remote_group_id:
        parts.append(f"{remote} == ${port_group_name(rule.remote_group_id)}_{ip}")
    elif rule.remote_ip_prefix and ipaddress.ip_network(rule.remote_ip_prefix).prefixlen > 0:
        parts.append(f"{remote} == {rule.remote_ip_prefix}")  # a /0 prefix matches everything: left out
    if rule.protocol == "icmp":
        parts.append(icmp)
    elif rule.protocol:
        parts.append(rule.protocol)
        low, high = rule.port_range_min, rule.port_range_max
        if low is not None and (high is None or high == low):
            parts.append(f"{rule.protocol}.dst == {low}")
        elif low is not None:
            parts += [f"{rule.protocol}.dst >= {low}", f"{rule.protocol}.dst <= {high}"]
    return " && ".join(parts)


def rule_acl(group_id: str, rule: RuleSpec) -> tuple[str, int, str, str]:
    """(direction, priority, match, action) of the ACL a rule becomes."""
    return OVN_DIRECTION[rule.direction], ACL_PRIORITY_ALLOW, acl_match(group_id, rule), "allow-related"


def dhcp_options(subnet: SubnetSpec) -> dict[str, str]:
    """Native DHCPv4 options: gateway, MTU, DNS, and an on-link route (router 0.0.0.0, RFC 3442)
    to the metadata address, which each chassis answers through the network's localport."""
    gateway = subnet.gateway_ip
    routes = f"{{{METADATA_CIDR},0.0.0.0, 0.0.0.0/0,{gateway}}}"
    return {"router": gateway, "server_id": gateway, "server_mac": DHCP_SERVER_MAC,
            "lease_time": str(LEASE_SECONDS), "mtu": str(MTU),
            "dns_server": f"{{{','.join(subnet.dns_nameservers) or gateway}}}",
            "classless_static_route": routes}


# -- port QoS (limits on what a port sends) --------------------------------------
# A port's bit-rate limit is one from-lport QoS row on its switch, tagged with the port id.
# ovn-northd makes it a set_meter() in the ls_in_qos_meter stage and ovn-controller an OpenFlow
# kbps meter, applied on the chassis the port is bound to: a limiter the userspace datapath runs.
QOS_PRIORITY = 2002
QOS_BURST_SHARE = 0.8      # burst = 80% of the rate, as the ovs switch driver's policer (lets TCP reach it)
QOS_MIN_BURST_KBIT = 16    # never below about one 1500-byte frame
QOS_MAX_KBIT = 4294967295  # the schema's bound for rate and burst


def qos_match(port_id: str) -> str:
    return f'inport == "{port_id}"'


def qos_bandwidth(bps: int | None) -> dict[str, int] | None:
    """A QoS row's bandwidth for a limit of `bps` bits/s: rate in kbit/s (rounded up), burst in kbit."""
    if bps is None:
        return None
    rate = math.ceil(bps / 1000)
    if not 1 <= rate <= QOS_MAX_KBIT:
        raise DriverError(f"OVN: a bit-rate limit must be 1-{QOS_MAX_KBIT * 1000} bits/s, not {bps}")
    burst = min(max(math.ceil(rate * QOS_BURST_SHARE), QOS_MIN_BURST_KBIT), QOS_MAX_KBIT)
    return {"rate": rate, "burst": burst}


class OvnBackend(NetworkBackend):
    """One persistent connection to the northbound database; one transaction per call."""

    name = "ovn"

    def __init__(self, nb_connection: str, *, timeout: float = 30.0):
        self.nb_connection = nb_connection
        self.timeout = timeout
        try:
            helper = idlutils.get_schema_helper(nb_connection, "OVN_Northbound")
            helper.register_all()
            idl = connection.OvsdbIdl(nb_connection, helper)
            # ovsdbapp keeps the connection on the API class; a class of our own per backend
            # keeps two backends (or a backend made after another was closed) apart.
            api_class = type("OvnNbApi", (impl_idl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
            self._api = api_class(connection.Connection(idl, timeout=timeout))
        except Exception as exc:
            raise DriverError(f"cannot connect to the OVN northbound database at {nb_connection}: {exc}") from exc

    def close(self) -> None:
        try:
            self._api.ovsdb_connection.stop(timeout=2)
        except Exception:  # closing is best effort
            log.debug("closing the OVN NB connection failed", exc_info=True)

    def _commit(self, what: str, commands: list[Any]) -> None:
        try:
            with self._api.transaction(check_error=True) as txn:
                for command in commands:
                    txn.add(command)
        except ovsdb_exceptions.TimeoutException as exc:  # its message lists every command
            raise DriverError(f"OVN: {what} failed: no answer from {self.nb_connection} "
                              f"within {self.timeout:g}s") from exc
        except Exception as exc:
            raise DriverError(f"OVN: {what} failed: {exc}") from exc

    # -- networks -----------------------------------------------------------------
    def ensure_network(self, network_id: str, name: str, subnets: list[SubnetSpec]) -> None:
        commands = [self._api.ls_add(switch_name(network_id), may_exist=True,
                                     external_ids={EXT_NETWORK: network_id, "dpustack:name": name}),
                    *self._metadata_port_commands(network_id)]
        self._commit(f"creating logical switch for network {name}", commands)
        for subnet in (s for s in subnets if s.enable_dhcp):
            self._ensure_dhcp(network_id, subnet)
        self._remove_stale_dhcp(network_id, {s.id for s in subnets if s.enable_dhcp})

    def _metadata_port_commands(self, network_id: str) -> list[Any]:
        """The network's metadata localport (see dpustack.metadata_port): every agent plugs its own copy."""
        name = metadata_port.port_name(network_id)
        address = f"{metadata_port.port_mac(network_id)} {metadata_port.METADATA_IP}"
        return [self._api.lsp_add(switch_name(network_id), name, may_exist=True,
                                  external_ids={EXT_NETWORK: network_id, "dpustack:role": "metadata"}),
                self._api.lsp_set_type(name, "localport"),
                self._api.lsp_set_addresses(name, [address])]

    def _ensure_dhcp(self, network_id: str, subnet: SubnetSpec) -> uuid.UUID:
        existing = self._dhcp_uuid(subnet.id)
        if existing is None:
            cidr = str(ipaddress.ip_network(subnet.cidr))
            self._commit(f"adding DHCP options for {cidr}",
                         [self._api.dhcp_options_add(cidr, **{EXT_SUBNET: subnet.id, EXT_NETWORK: network_id})])
            existing = self._dhcp_uuid(subnet.id)
        assert existing is not None
        self._commit(f"setting DHCP options for {subnet.cidr}",
                     [self._api.dhcp_options_set_options(existing, **dhcp_options(subnet))])
        return existing

    def _dhcp_uuid(self, subnet_id: str) -> uuid.UUID | None:
        for row in self._api.dhcp_options_list().execute(check_error=True):
            if row.external_ids.get(EXT_SUBNET) == subnet_id:
                return row.uuid  # the UUID object: the IDL ignores a plain string here
        return None

    def _remove_stale_dhcp(self, network_id: str, keep: set[str]) -> None:
        """Delete the network's DHCP options rows of subnets not in `keep` (gone, or DHCP turned off)."""
        stale = [row.uuid for row in self._api.dhcp_options_list().execute(check_error=True)
                 if row.external_ids.get(EXT_NETWORK) == network_id and row.external_ids.get(EXT_SUBNET) not in keep]
        if stale:
            self._commit(f"removing stale DHCP options of network {network_id}",
                         [self._api.dhcp_options_del(row) for row in stale])

    def delete_network(self, network_id: str) -> None:
        commands: list[Any] = [self._api.ls_del(switch_name(network_id), if_exists=True)]
        switch = self._api.ls_get(switch_name(network_id)).execute(check_error=False)
        if switch is not None:
            for row in self._api.dhcp_options_list().execute(check_error=True):
                if row.external_ids.get(EXT_NETWORK) == network_id:
                    commands.append(self._api.dhcp_options_del(row.uuid))
        self._commit(f"deleting network {network_id}", commands)

    # -- ports --------------------------------------------------------------------
    def ensure_port(self, port: PortSpec) -> None:
        """The logical switch port, and its membership of exactly its groups' port groups (and the drop group)."""
        address = f"{port.mac} {port.ip}" if port.ip else port.mac
        commands: list[Any] = [
            self._api.lsp_add(switch_name(port.network_id), port.id, may_exist=True,
                              external_ids={EXT_PORT: port.id, **port.external_ids}),
            self._api.lsp_set_addresses(port.id, [address]),
            self._api.lsp_set_port_security(port.id, [address]),
            self._api.lsp_set_options(port.id, **({"requested-chassis": port.requested_chassis}
                                                  if port.requested_chassis else {})),
        ]
        if port.subnet_id:
            dhcp = self._dhcp_uuid(port.subnet_id)
            if dhcp is not None:
                commands.append(self._api.lsp_set_dhcpv4_options(port.id, dhcp))
        wanted = {port_group_name(group_id): group_id for group_id in port.security_groups}
        if wanted:
            commands += self._drop_group_commands()
        current = self._port_groups_holding(port.id)
        for name in sorted(set(wanted) - current):
            # A group's port group exists from the group's creation; should it be missing (say the
            # northbound database was rebuilt), an empty one drops traffic until the group is synced.
            commands += [self._api.pg_add(name, may_exist=True, acls=[], ports=[],
                                          external_ids={EXT_SECURITY_GROUP: wanted[name]}),
                         self._api.pg_add_ports(name, [port.id])]
        if wanted and DROP_PORT_GROUP not in current:
            commands.append(self._api.pg_add_ports(DROP_PORT_GROUP, [port.id]))
        for name in sorted(current - set(wanted) - ({DROP_PORT_GROUP} if wanted else set())):
            commands.append(self._api.pg_del_ports(name, [port.id], if_exists=True))
        commands += self._qos_commands(port)
        self._commit(f"plugging port {port.id} into network {port.network_id}", commands)

    def delete_port(self, port_id: str) -> None:
        commands: list[Any] = [self._api.pg_del_ports(name, [port_id], if_exists=True)
                               for name in sorted(self._port_groups_holding(port_id))]
        commands += [self._api.db_remove("Logical_Switch", switch, "qos_rules", row.uuid)
                     for switch, row in self._qos_rows_of(port_id)]
        commands.append(self._api.lsp_del(port_id, if_exists=True))
        self._commit(f"deleting port {port_id}", commands)

    # -- port QoS -----------------------------------------------------------------
    def _qos_commands(self, port: PortSpec) -> list[Any]:
        """Make the port's QoS rows exactly what it asks for: one bandwidth rule on its switch, or none.

        ``qos_pps`` is not OVN's: its QoS rules meter kbit/s only; the node's agent meters packets.
        """
        switch = switch_name(port.network_id)
        bandwidth = qos_bandwidth(port.qos_bps)
        key = ("from-lport", QOS_PRIORITY, qos_match(port.id))
        commands: list[Any] = []
        kept = False
        for holder, row in self._qos_rows_of(port.id):
            if bandwidth and not kept and holder == switch and (row.direction, row.priority, row.match) == key:
                kept = True
                if dict(row.bandwidth) != bandwidth or row.action:
                    commands.append(self._api.db_set("QoS", row.uuid, ("bandwidth", bandwidth), ("action", {})))
            else:
                commands.append(self._api.db_remove("Logical_Switch", holder, "qos_rules", row.uuid))
        if bandwidth and not kept:
            commands.append(self._api.qos_add(switch, *key, rate=bandwidth["rate"], burst=bandwidth["burst"],
                                              external_ids={EXT_PORT: port.id}))
        return commands

    def _qos_rows_of(self, port_id: str) -> list[tuple[str, Any]]:
        """(switch name, QoS row) for every QoS row tagged with the port, on any switch."""
        return [(switch.name, row) for switch in self._api.db_list_rows("Logical_Switch").execute(check_error=True)
                for row in switch.qos_rules if row.external_ids.get(EXT_PORT) == port_id]

    def _port_groups_holding(self, port_id: str) -> set[str]:
        """Names of dpustack's port groups (security groups and the drop group) the port is in."""
        held = set()
        for group in self._api.db_list_rows("Port_Group").execute(check_error=True):
            ours = group.name == DROP_PORT_GROUP or EXT_SECURITY_GROUP in group.external_ids
            if ours and any(member.name == port_id for member in group.ports):
                held.add(group.name)
        return held

    def _drop_group_commands(self) -> list[Any]:
        commands = [self._api.pg_add(DROP_PORT_GROUP, may_exist=True, acls=[], ports=[],
                                     external_ids={"dpustack:role": "drop"})]
        for direction, priority, match, action in DROP_ACLS:
            commands.append(self._api.pg_acl_add(DROP_PORT_GROUP, direction, priority, match, action,
                                                 may_exist=True))
        return commands

    # -- security groups ---------------------------------------------------------
    def ensure_security_group(self, group: SecurityGroupSpec) -> None:
        """The group's port group with one ACL per rule; ACLs of rules that are gone are removed."""
        name = port_group_name(group.id)
        commands: list[Any] = [self._api.pg_add(name, may_exist=True, acls=[], ports=[],
                                                external_ids={EXT_SECURITY_GROUP: group.id,
                                                              "dpustack:name": group.name})]
        wanted = {(rule.id, *rule_acl(group.id, rule)) for rule in group.rules}
        have = set()
        for acl in self._acls_of(name):
            key = (acl.external_ids.get(EXT_RULE), acl.direction, acl.priority, acl.match, acl.action)
            if key in wanted:
                have.add(key)
            else:
                commands.append(self._api.db_remove("Port_Group", name, "acls", acl.uuid))
        for rule_id, direction, priority, match, action in sorted(wanted - have):
            commands.append(self._api.pg_acl_add(name, direction, priority, match, action, may_exist=True,
                                                 **{EXT_RULE: rule_id, EXT_SECURITY_GROUP: group.id}))
        self._commit(f"syncing security group {group.name}", commands)

    def _acls_of(self, port_group: str) -> list[Any]:
        rows = self._api.db_find_rows("Port_Group", ("name", "=", port_group)).execute(check_error=True)
        return [acl for row in rows for acl in row.acls]

    def delete_security_group(self, group_id: str) -> None:
        # Its ACLs go with the port group (a group still used by a port is never deleted).
        self._commit(f"deleting security group {group_id}",
                     [self._api.pg_del(port_group_name(group_id), if_exists=True)])
