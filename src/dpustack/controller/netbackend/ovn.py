"""The OVN backend: networks, subnets and ports in the OVN northbound database (ovsdbapp).

Names: logical switch `dps-<network id>`, logical switch port `<port id>`
(what agents set as `external_ids:iface-id`, so ovn-controller binds it).
Each subnet gets native DHCP with a classless route to the metadata address.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from typing import Any

from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.ovn_northbound import impl_idl

from dpustack.controller.netbackend import NetworkBackend, PortSpec, SubnetSpec
from dpustack.errors import DriverError

log = logging.getLogger(__name__)

METADATA_CIDR = "169.254.169.254/32"
DHCP_SERVER_MAC = "fa:16:3e:00:00:01"
MTU = 1442  # Geneve overhead on a 1500-byte underlay
LEASE_SECONDS = 43200
EXT_NETWORK, EXT_SUBNET, EXT_PORT = "dpustack:network_id", "dpustack:subnet_id", "dpustack:port_id"


def switch_name(network_id: str) -> str:
    return f"dps-{network_id}"


def dhcp_options(subnet: SubnetSpec) -> dict[str, str]:
    """Native DHCPv4 options: gateway, MTU, DNS, and the route to the metadata service."""
    gateway = subnet.gateway_ip
    routes = f"{{{METADATA_CIDR},{gateway}, 0.0.0.0/0,{gateway}}}"
    return {"router": gateway, "server_id": gateway, "server_mac": DHCP_SERVER_MAC,
            "lease_time": str(LEASE_SECONDS), "mtu": str(MTU), "dns_server": f"{{{gateway}}}",
            "classless_static_route": routes}


class OvnBackend(NetworkBackend):
    """One persistent connection to the northbound database; one transaction per call."""

    name = "ovn"

    def __init__(self, nb_connection: str, *, timeout: float = 30.0):
        self.nb_connection = nb_connection
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
        except Exception as exc:
            raise DriverError(f"OVN: {what} failed: {exc}") from exc

    # -- networks -----------------------------------------------------------------
    def ensure_network(self, network_id: str, name: str, subnets: list[SubnetSpec]) -> None:
        commands = [self._api.ls_add(switch_name(network_id), may_exist=True,
                                     external_ids={EXT_NETWORK: network_id, "dpustack:name": name})]
        self._commit(f"creating logical switch for network {name}", commands)
        for subnet in subnets:
            self._ensure_dhcp(network_id, subnet)

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
        self._commit(f"plugging port {port.id} into network {port.network_id}", commands)

    def delete_port(self, port_id: str) -> None:
        self._commit(f"deleting port {port_id}", [self._api.lsp_del(port_id, if_exists=True)])
