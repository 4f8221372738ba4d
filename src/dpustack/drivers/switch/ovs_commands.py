"""The OVSDB commands the ``ovs`` switch driver batches into transactions.

Each class is an ovsdbapp command: ``run_idl(txn)`` adds its writes to one
IDL transaction, and the driver puts several in one
``api.transaction(check_error=True)``, so plugging 500 ports is one round
trip to ovsdb-server. They differ from ovsdbapp's stock ``add_br`` /
``add_port`` / ``del_port`` where dpustack's semantics need it:

* a bridge that exists is left alone (ovsdbapp's ``add_br`` would switch an
  existing kernel-datapath bridge to the driver's datapath type);
* a port that exists on *another* bridge is refused, not silently accepted,
  and a port is never unplugged from a bridge it is not on;
* ``external_ids`` of an existing Interface are updated key by key (an OVSDB
  mutation), never by rewriting the column, so keys written by others
  (ovn-controller's ``ovn-installed``) survive;
* refusals raise :class:`Refused` with a sentence for the user, which the
  driver turns into :class:`dpustack.errors.DriverError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ovsdbapp.backend.ovs_idl import command, idlutils


class Refused(Exception):
    """A command will not run; the message says why, in words for the user."""


def _row(api, table: str, name: str):
    return idlutils.row_by_value(api.idl, table, "name", name, None)


def _bridges_of_ports(api) -> dict:
    """Port row -> the Bridge row holding it, for every bridge (one pass, not one per port)."""
    return {port: bridge for bridge in api.tables["Bridge"].rows.values() for port in bridge.ports}


def _interface_of(port):
    """The Interface of a port: the one named like it (a bond has several), else the first."""
    interfaces = port.interfaces
    return next((i for i in interfaces if i.name == port.name), interfaces[0] if interfaces else None)


class Comment(command.BaseCommand):
    """Label the transaction in ovsdb-server's log (``ovsdb-tool show-log`` shows who did what)."""

    def __init__(self, api, text: str):
        super().__init__(api)
        self.text = text

    def run_idl(self, txn) -> None:
        txn.add_comment(self.text)


class ReadBarrier(command.BaseCommand):
    """A read of nothing much: its reply proves the replica has every update sent before it."""

    def run_idl(self, txn) -> None:
        txn.add_op({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["_uuid"]})


class EnsureBridge(command.BaseCommand):
    """Create a bridge with the given datapath type unless one of that name exists."""

    def __init__(self, api, name: str, datapath_type: str):
        super().__init__(api)
        self.name = name
        self.datapath_type = datapath_type

    def run_idl(self, txn) -> None:
        if _row(self.api, "Bridge", self.name) is not None:
            return
        interface = txn.insert(self.api.tables["Interface"])
        interface.name = self.name
        interface.type = "internal"  # the bridge's own port (a tap device in the userspace datapath)
        local = txn.insert(self.api.tables["Port"])
        local.name = self.name
        local.interfaces = [interface]
        bridge = txn.insert(self.api.tables["Bridge"])
        bridge.name = self.name
        if self.datapath_type:
            bridge.datapath_type = self.datapath_type
        bridge.ports = [local]
        self.api._ovs.addvalue("bridges", bridge)


class PlugPorts(command.BaseCommand):
    """Plug ports into one (existing or just ensured) bridge; result: ``{name: external_ids}`` as stored."""

    def __init__(self, api, bridge: str, ports: Mapping[str, Mapping[str, str]], may_exist: bool):
        super().__init__(api)
        self.bridge = bridge
        self.ports = ports
        self.may_exist = may_exist

    def run_idl(self, txn) -> None:
        bridge = _row(self.api, "Bridge", self.bridge)
        if bridge is None:
            raise Refused(f"no bridge '{self.bridge}'")
        owners = None
        self.result = {}
        for name, external_ids in self.ports.items():
            port = _row(self.api, "Port", name)
            if port is None:
                self.result[name] = self._insert(txn, bridge, name, external_ids)
                continue
            if owners is None:
                owners = _bridges_of_ports(self.api)
            owner = owners.get(port)
            if owner is not None and owner.name != self.bridge:
                raise Refused(f"port '{name}' is on bridge '{owner.name}', not '{self.bridge}'")
            if not self.may_exist:
                raise Refused(f"port '{name}' already exists on bridge '{self.bridge}'")
            self.result[name] = self._update(port, name, external_ids)

    def _insert(self, txn, bridge, name: str, external_ids: Mapping[str, str]) -> dict[str, str]:
        interface = txn.insert(self.api.tables["Interface"])
        interface.name = name
        interface.external_ids = dict(external_ids)
        port = txn.insert(self.api.tables["Port"])
        port.name = name
        port.interfaces = [interface]
        bridge.addvalue("ports", port)
        return dict(external_ids)

    def _update(self, port, name: str, external_ids: Mapping[str, str]) -> dict[str, str]:
        interface = _interface_of(port)
        if interface is None:
            raise Refused(f"port '{name}' has no interface")
        stored = dict(interface.external_ids)
        for key, value in external_ids.items():
            if stored.get(key) != value:
                interface.setkey("external_ids", key, value)
                stored[key] = value
        return stored


class UnplugPorts(command.BaseCommand):
    """Remove ports from one bridge; missing ones are fine when ``if_exists``."""

    def __init__(self, api, bridge: str, names: Iterable[str], if_exists: bool):
        super().__init__(api)
        self.bridge = bridge
        self.names = list(names)
        self.if_exists = if_exists

    def run_idl(self, txn) -> None:
        bridge = _row(self.api, "Bridge", self.bridge)
        if bridge is None:
            if self.if_exists:
                return
            raise Refused(f"no bridge '{self.bridge}'")
        on_bridge = {port.name: port for port in bridge.ports}
        for name in self.names:
            if name == self.bridge:
                raise Refused(f"'{name}' is the bridge's own port; it goes only with the bridge")
            port = on_bridge.get(name)
            if port is None:
                if self.if_exists:
                    continue
                raise Refused(f"no port '{name}' on bridge '{self.bridge}'")
            bridge.delvalue("ports", port)
            for interface in port.interfaces:
                interface.delete()
            port.delete()


class SetIngressPolicing(command.BaseCommand):
    """Set (or, with zeros, clear) an Interface's ingress policer: rate and burst in kbit/s and kbit."""

    def __init__(self, api, name: str, rate_kbps: int, burst_kbit: int):
        super().__init__(api)
        self.name = name
        self.rate_kbps = rate_kbps
        self.burst_kbit = burst_kbit

    def run_idl(self, txn) -> None:
        interface = _row(self.api, "Interface", self.name)
        if interface is None:
            raise Refused(f"no port '{self.name}'")
        interface.ingress_policing_rate = self.rate_kbps
        interface.ingress_policing_burst = self.burst_kbit
