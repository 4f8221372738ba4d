"""SwitchDriver ``ovs``: Open vSwitch through one persistent OVSDB connection (ovsdbapp).

    driver = OvsSwitchDriver("unix:/run/dpustack/dpu1/db.sock", timeout=10)
    driver.plug_many("br-int", {"pf0vf3": {"iface-id": port_id, "attached-mac": mac}})

* One connection per driver, opened on first use and kept: ovsdbapp's IDL
  keeps a replica of the tables below (``MONITORED``).
* Every change is a few command objects (``ovs_commands``) in one
  transaction, with errors checked and turned into :class:`DriverError`.
  ``plug_many`` puts N ports in one transaction: one round trip and one
  ovs-vswitchd reconfiguration, where ``ovs-vsctl add-port`` per port pays
  both N times.
* A call returns once ovs-vswitchd has applied the change (``cur_cfg``
  caught up with ``next_cfg``), as ``ovs-vsctl`` does without ``--no-wait``.
* ovsdb-server restarts: the IDL reconnects by itself; a call made while the
  server is away waits for it, for at most about ``timeout`` seconds, then
  fails with a DriverError. Reads make one round trip first, so they never
  answer from a replica the server no longer agrees with; after a restart
  that lost the database, ``plug_many`` with the desired ports restores them
  (the agent's reconcile does exactly that).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Literal

from ovsdbapp import exceptions as ovsdbapp_errors
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.backend.ovs_idl import transaction as ovsdbapp_transaction
from ovsdbapp.schema.open_vswitch import impl_idl
from pydantic import PositiveFloat, field_validator

from dpustack.drivers.options import DriverOptions
from dpustack.drivers.switch import SwitchDriver, SwitchPort
from dpustack.drivers.switch.ovs_meters import MAX_PPS, PacketRateMeters
from dpustack.drivers.switch.ovs_commands import (
    Comment, EnsureBridge, PlugPorts, ReadBarrier, Refused, SetIngressPolicing, UnplugPorts,
)
from dpustack.errors import DriverError

LOG = logging.getLogger(__name__)

SCHEMA = "Open_vSwitch"

#: The only tables and columns the replica holds. Fewer columns, less
#: traffic: ovs-vswitchd rewrites every Interface's statistics every 5 s.
MONITORED = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "type", "external_ids", "ofport", "error",
                  "ingress_policing_rate", "ingress_policing_burst"],
}

#: Linux netdev names (bridges and representors are netdevs): 1-15 bytes,
#: no '/', ':' or whitespace, not '.' or '..'.
IFNAMSIZ = 16
_BAD_NAME_CHARS = set("/: \t\n\r\v\f")

#: An ingress burst of 80% of the rate lets TCP reach the rate (vswitch.xml);
#: never below one 1500-byte frame (12 kbit), rounded up.
BURST_SHARE = 0.8
MIN_BURST_KBIT = 16


class _VswitchTransaction(impl_idl.OvsVsctlTransaction):
    """ovsdbapp's ovs-vsctl-like transaction: commits, then waits for ovs-vswitchd to apply it.

    A lagging ovs-vswitchd is logged, not raised: the change is committed and
    vswitchd applies it when it comes back.
    """

    def post_commit(self, txn) -> None:
        for cmd in self.commands:
            cmd.post_commit(txn)
        try:
            self.do_post_commit(txn)
        except ovsdbapp_errors.TimeoutException:
            LOG.warning("ovs-vswitchd has not applied the change within %.0f s (is it running?)", self.timeout)
        except Exception:  # the change is committed: failing the call now would make it look undone
            LOG.exception("checking that ovs-vswitchd applied the change failed")


class _OvsdbApi(impl_idl.OvsdbIdl):
    """ovsdbapp's Open_vSwitch API with the connection kept per instance.

    ovsdbapp keeps the connection on the *class*: a second driver in one
    process (a second DPU, the next test) would silently use the first one's
    database.
    """

    _own_connection = None

    @property
    def ovsdb_connection(self):
        return self._own_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, conn) -> None:
        self._own_connection = conn

    def create_transaction(self, check_error=False, log_errors=True, **kwargs):
        return _VswitchTransaction(self, self.ovsdb_connection, check_error=check_error, log_errors=log_errors)


class OvsSwitchOptions(DriverOptions):
    """[switch.ovs]: the DPU's OVSDB server, how long one call may take (s, including the wait for a
    restarting server), and the datapath of bridges the agent creates (``netdev``: userspace, as in
    the lab; ``system``: the kernel's)."""

    connection: str = "unix:/var/run/openvswitch/db.sock"
    timeout: PositiveFloat = 10.0
    datapath_type: Literal["netdev", "system"] = "netdev"
    # ovs-vswitchd's run directory, where its <bridge>.mgmt OpenFlow sockets are (packet-rate limits);
    # unset: the directory of a unix: connection's socket, else /var/run/openvswitch
    rundir: str | None = None

    @field_validator("connection")
    @classmethod
    def _ovsdb_remote(cls, connection: str) -> str:
        if not re.fullmatch(r"unix:/.+|tcp:[^:]+:\d{1,5}|tcp:\[[0-9A-Fa-f:.]+\]:\d{1,5}", connection):
            raise ValueError(f"'{connection}' is not an OVSDB remote such as unix:/var/run/openvswitch/db.sock "
                             f"or tcp:127.0.0.1:6640")
        return connection


class OvsSwitchDriver(SwitchDriver):
    """Ports on Open vSwitch bridges; bridges are created on first use with ``datapath_type``.

    ``connection`` is an OVSDB remote (``unix:/path/db.sock``, ``tcp:ip:port``);
    ``timeout`` bounds each call in seconds, including the wait for a
    restarting ovsdb-server; ``datapath_type`` is used only for bridges this
    driver creates (``netdev``: the userspace datapath; ``system``: the kernel's);
    ``rundir`` holds ovs-vswitchd's ``<bridge>.mgmt`` OpenFlow sockets (default: the
    directory of a ``unix:`` OVSDB socket, else /var/run/openvswitch), used for
    packet-rate limits only.
    """

    options = OvsSwitchOptions

    def __init__(self, connection: str, timeout: float = 10.0, datapath_type: str = "netdev",
                 rundir: str | None = None):
        if not connection or not isinstance(connection, str):
            raise DriverError("switch: the ovs driver needs an OVSDB connection such as unix:/run/openvswitch/db.sock")
        if not timeout or timeout <= 0:
            raise DriverError(f"switch: timeout must be a positive number of seconds, not {timeout!r}")
        self.connection = connection
        self.timeout = float(timeout)
        self.datapath_type = datapath_type
        if not rundir:
            rundir = (connection[len("unix:"):].rsplit("/", 1)[0] or "/") if connection.startswith("unix:") \
                else "/var/run/openvswitch"
        self.meters = PacketRateMeters(rundir, timeout=self.timeout)
        self._api: _OvsdbApi | None = None
        self._connect_lock = threading.Lock()

    # ------------------------------------------------------------ interface
    def validate(self) -> None:
        """Connect (within ``timeout``) and check the database has its root record."""
        api = self._connected("validate")
        self._caught_up(api, "validate")
        self._check_initialised(api, "validate")

    def add_port(self, bridge: str, port_name: str, external_ids: dict[str, str], *,
                 may_exist: bool = True) -> SwitchPort:
        return self._plug("add_port", bridge, {port_name: external_ids}, may_exist)[0]

    def plug_many(self, bridge: str, ports: Mapping[str, Mapping[str, str]], *,
                  may_exist: bool = True) -> list[SwitchPort]:
        """Plug every ``{port_name: external_ids}`` into ``bridge`` in ONE transaction.

        All or nothing: one refused port (say, it is on another bridge) and no
        port is plugged. Ports already there get their external_ids updated;
        re-plugging the full desired set is how a re-sync is done.
        """
        return self._plug("plug_many", bridge, ports, may_exist)

    def del_port(self, bridge: str, port_name: str, *, if_exists: bool = True) -> None:
        self._unplug("del_port", bridge, [port_name], if_exists)

    def unplug_many(self, bridge: str, port_names: Iterable[str], *, if_exists: bool = True) -> None:
        """Unplug several ports from ``bridge`` in one transaction (all or nothing)."""
        self._unplug("unplug_many", bridge, list(port_names), if_exists)

    def list_ports(self, bridge: str | None = None) -> list[SwitchPort]:
        """Ports of one bridge (none if it does not exist), or of every bridge; not the bridges' own ports."""
        api = self._connected("list_ports")
        self._caught_up(api, "list_ports")
        ports = []
        with api.ovsdb_connection.lock:
            for row in api.tables["Bridge"].rows.values():
                if bridge is not None and row.name != bridge:
                    continue
                for port in row.ports:
                    if port.name == row.name:
                        continue
                    iface = next((i for i in port.interfaces if i.name == port.name), None)
                    ports.append(SwitchPort(row.name, port.name, dict(iface.external_ids) if iface else {}))
        return sorted(ports, key=lambda p: (p.bridge, p.name))

    def set_qos(self, port_name: str, *, bps: int | None = None, pps: int | None = None) -> None:
        """Limit what ``port_name`` sends into the switch to ``bps`` bits/s; ``None`` removes the limit.

        Writes the Interface's ``ingress_policing_rate`` (kbit/s, rounded up)
        and ``ingress_policing_burst`` (80% of the rate, at least 16 kbit).

        What really limits traffic depends on the datapath. ovs-vswitchd turns
        these columns into a Linux tc ingress policer (``matchall``, else
        ``basic`` classifier, ``police`` action) on the port's kernel netdev.

        * Kernel datapath (and TC flow offload on a BlueField, where the NIC
          can enforce the matchall policer): tc ingress runs before OVS gets
          the packet, so the policer limits what the switch forwards.
        * Userspace (``netdev``) datapath, as in the lab: OVS reads a system
          port through an AF_PACKET socket, and the kernel hands packets to
          such sockets *before* tc ingress (read from the kernel's receive
          path, not measured), so the policer does not limit what OVS
          forwards. On this project's machines the kernel has no tc
          classifiers at all: ovs-vswitchd logs "adding cls_basic policing
          action failed", the columns stay set, and in a measurement 16 Mbit/s
          offered through a 2 Mbit/s policer on a veth port all arrived.
        * The limiter that does work in the userspace datapath is an OpenFlow
          meter, which dpif-netdev runs itself (measured here: of 2000 pkt/s
          offered for 2 s, a 500 pkt/s meter let 750 pkt/s through, the rate
          plus its burst; a 4000 kbit/s meter likewise). Meters act through
          flows, and br-int's flows belong to ovn-controller: per-port meters
          are OVN QoS rules written by the network service, not this driver's
          (measured: docs/network.md, "Port QoS").

        ``pps`` is refused here: OVS's per-interface packet-rate policer
        (``ingress_policing_kpkts_rate``) is the same tc mechanism and limits
        nothing in the userspace datapath. Packet rates are limited by
        :meth:`set_packet_rate` (an OpenFlow pktps meter) instead.
        """
        self._check_name("set_qos", "port", port_name)
        if pps is not None:
            raise DriverError("switch.set_qos: packet-rate limits (pps) are not supported by interface policing "
                              "(a tc policer, which limits nothing here); use set_packet_rate (an OpenFlow meter)")
        if bps is None:
            rate, burst = 0, 0
        elif isinstance(bps, bool) or not isinstance(bps, int) or bps <= 0:
            raise DriverError(f"switch.set_qos: bps must be a positive whole number of bits per second, not {bps!r}")
        else:
            rate = math.ceil(bps / 1000)
            burst = max(math.ceil(rate * BURST_SHARE), MIN_BURST_KBIT)
        api = self._connected("set_qos")
        self._transact("set_qos", api, f"set_qos {port_name} ingress {rate} kbit/s",
                       [SetIngressPolicing(api, port_name, rate, burst)])

    def set_packet_rate(self, bridge: str, port_name: str, pps: int | None) -> None:
        """Limit what ``port_name`` sends into ``bridge`` with an OpenFlow pktps meter (``ovs_meters``).

        ``None`` removes the meter and its flow. The flow names the port's
        current ofport: after a re-plug, or after ovn-controller reconnects
        (it deletes every flow and meter on br-int), set it again.
        """
        self._check_name("set_packet_rate", "bridge", bridge)
        self._check_name("set_packet_rate", "port", port_name)
        if pps is None:
            self.meters.remove(bridge, port_name)
            return
        if isinstance(pps, bool) or not isinstance(pps, int) or not 1 <= pps <= MAX_PPS:
            raise DriverError(f"switch.set_packet_rate: pps must be a whole number of packets per second "
                              f"from 1 to {MAX_PPS}, not {pps!r}")
        self.meters.apply(bridge, port_name, ofport=self._ofport("set_packet_rate", bridge, port_name), pps=pps)

    def packet_rate(self, bridge: str, port_name: str) -> int | None:
        """The pktps rate of the port's meter when its flow is in place on the current ofport, else None."""
        self._check_name("packet_rate", "bridge", bridge)
        self._check_name("packet_rate", "port", port_name)
        return self.meters.read(bridge, port_name, ofport=self._ofport("packet_rate", bridge, port_name))

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._connect_lock:
            api, self._api = self._api, None
        if api is not None:
            api.ovsdb_connection.stop(timeout=self.timeout)

    # ------------------------------------------------------------- helpers
    def _plug(self, operation: str, bridge: str, ports: Mapping[str, Mapping[str, str]],
              may_exist: bool) -> list[SwitchPort]:
        self._check_name(operation, "bridge", bridge)
        for name, external_ids in ports.items():
            self._check_name(operation, "port", name)
            self._check_external_ids(operation, name, external_ids)
        if not ports:
            return []
        api = self._connected(operation)
        plug = PlugPorts(api, bridge, ports, may_exist)
        self._transact(operation, api, f"{operation} {_count(ports)} into {bridge}",
                       [EnsureBridge(api, bridge, self.datapath_type), plug])
        return [SwitchPort(bridge, name, external_ids) for name, external_ids in plug.result.items()]

    def _unplug(self, operation: str, bridge: str, names: list[str], if_exists: bool) -> None:
        self._check_name(operation, "bridge", bridge)
        for name in names:
            self._check_name(operation, "port", name)
        api = self._connected(operation)
        self._transact(operation, api, f"{operation} {_count(names)} from {bridge}",
                       [UnplugPorts(api, bridge, names, if_exists)])

    def _ofport(self, operation: str, bridge: str, port_name: str) -> int:
        """The OpenFlow port number ovs-vswitchd gave ``port_name`` on ``bridge``."""
        api = self._connected(operation)
        self._caught_up(api, operation)
        with api.ovsdb_connection.lock:
            for row in api.tables["Bridge"].rows.values():
                if row.name != bridge:
                    continue
                for port in row.ports:
                    iface = next((i for i in port.interfaces if i.name == port.name), None)
                    if port.name == port_name and iface is not None:
                        ofport = iface.ofport[0] if iface.ofport else -1
                        if ofport > 0:
                            return ofport
                        error = iface.error[0] if iface.error else "no ofport yet"
                        raise DriverError(f"switch.{operation}: port '{port_name}' on {bridge} is not open in "
                                          f"ovs-vswitchd ({error})")
        raise DriverError(f"switch.{operation}: no port '{port_name}' on bridge '{bridge}'")

    def _transact(self, operation: str, api: _OvsdbApi, summary: str, commands: list) -> None:
        """Commit ``commands`` in one checked transaction labelled ``dpustack: <summary>``."""
        self._check_initialised(api, operation)
        try:
            with api.transaction(check_error=True, log_errors=False) as txn:
                txn.add(Comment(api, f"dpustack: {summary}"))
                for cmd in commands:
                    txn.add(cmd)
        except Exception as exc:
            raise self._driver_error(operation, exc) from exc

    def _driver_error(self, operation: str, exc: Exception) -> DriverError:
        """One readable DriverError for whatever a transaction raised."""
        if isinstance(exc, Refused):
            reason = str(exc)
        elif isinstance(exc, ovsdbapp_errors.TimeoutException) or str(exc) == "OVS transaction timed out":
            reason = (f"ovsdb-server at {self.connection} did not answer within {self.timeout:g} s "
                      f"(is it running?)")
        elif isinstance(exc, RuntimeError) and str(exc).startswith("OVSDB Error: "):
            reason = f"ovsdb-server refused the transaction: {_server_error(str(exc)[len('OVSDB Error: '):])}"
        else:  # a bug or a surprise in ovsdbapp/python-ovs: say what, keep the cause
            reason = f"{type(exc).__name__}: {exc}"
        return DriverError(f"switch.{operation}: {reason}")

    def _connected(self, operation: str) -> _OvsdbApi:
        """The API on the driver's one connection, opening it (within ``timeout``) if needed."""
        with self._connect_lock:
            if self._api is None:
                self._api = self._open(operation)
            return self._api

    def _open(self, operation: str) -> _OvsdbApi:
        deadline = time.monotonic() + self.timeout
        while True:  # the server may be restarting: retry the schema fetch until the deadline
            try:
                helper = idlutils.get_schema_helper(self.connection, SCHEMA)
                break
            except Exception as exc:  # ovsdbapp raises a bare Exception here
                if time.monotonic() >= deadline:
                    raise DriverError(f"switch.{operation}: cannot reach ovsdb-server at {self.connection} "
                                      f"within {self.timeout:g} s ({exc})") from exc
                time.sleep(0.1)
        for table, columns in MONITORED.items():
            helper.register_columns(table, columns)
        idl = ovsdbapp_connection.OvsdbIdl(self.connection, helper)
        _quick_reconnect(idl, self.connection)
        conn = ovsdbapp_connection.Connection(idl, max(deadline - time.monotonic(), 1.0))
        try:
            api = _OvsdbApi(conn)
        except Exception as exc:
            idl.close()
            raise DriverError(f"switch.{operation}: connected to {self.connection} but could not read the "
                              f"database within {self.timeout:g} s ({exc})") from exc
        conn.timeout = self.timeout  # the start used what was left; every later call gets the full bound
        return api

    def _caught_up(self, api: _OvsdbApi, operation: str) -> None:
        """One round trip to the server, so the replica holds everything the server had before it.

        The server sends updates before the reply, so once the reply is in,
        a read of the replica is current. While the server is away this waits
        (bounded) for the reconnect and the fresh dump: reads never show the
        rows of a database that was lost in a restart.
        """
        txn = ovsdbapp_transaction.Transaction(api, api.ovsdb_connection, check_error=True, log_errors=False)
        txn.add(ReadBarrier(api))
        try:
            txn.commit()
        except Exception as exc:
            raise self._driver_error(operation, exc) from exc

    def _check_initialised(self, api: _OvsdbApi, operation: str) -> None:
        with api.ovsdb_connection.lock:
            if not api.tables["Open_vSwitch"].rows:
                raise DriverError(f"switch.{operation}: the database at {self.connection} has no Open_vSwitch "
                                  f"record (not initialised: run `ovs-vsctl --db={self.connection} init`)")

    @staticmethod
    def _check_name(operation: str, kind: str, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise DriverError(f"switch.{operation}: {kind} name must be a non-empty string, not {name!r}")
        if (len(name.encode()) >= IFNAMSIZ or name in (".", "..")
                or any(c in _BAD_NAME_CHARS for c in name)):
            raise DriverError(f"switch.{operation}: invalid {kind} name '{name}': a Linux interface name has "
                              f"1-{IFNAMSIZ - 1} bytes and no '/', ':' or spaces")

    @staticmethod
    def _check_external_ids(operation: str, port: str, external_ids: Mapping[str, str]) -> None:
        # python-ovs drops a wrongly typed value with only a log line: refuse it here instead
        if not isinstance(external_ids, Mapping) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in external_ids.items()):
            raise DriverError(f"switch.{operation}: external_ids of port '{port}' must map non-empty strings "
                              f"to strings, not {external_ids!r}")


def _quick_reconnect(idl: ovsdbapp_connection.OvsdbIdl, connection: str) -> None:
    """Retry a local (unix socket) server every second while it is away, not with backoff up to 8 s.

    python-ovs doubles its reconnect delay up to 8 s, so a call waiting out a
    2 s restart could wait 6 s more. A retry per second on a local socket
    costs nothing. python-ovs offers no public knob; without the attribute
    the default backoff stays.
    """
    fsm = getattr(getattr(idl, "_session", None), "reconnect", None)
    if connection.startswith("unix:") and fsm is not None:
        fsm.set_backoff(1000, 1000)


def _server_error(text: str) -> str:
    """The server's JSON error object ({"error": ..., "details": ...}) as one line."""
    try:
        error = json.loads(text)
        return f"{error['error']}: {error['details']}" if error.get("details") else str(error["error"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return text


def _count(items) -> str:
    n = len(items)
    return f"{n} port" if n == 1 else f"{n} ports"
