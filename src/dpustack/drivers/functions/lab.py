"""FunctionDriver ``lab``: hot-plugged functions emulated with veth pairs between two namespaces.

The lab's bare-metal host is one network namespace and its DPU another. A
``net`` function (PF or VF) is a veth pair:

* the host end lives in the host namespace, named like a NIC at the
  function's BDF, ``{host_prefix}{slot}f{pci function}`` (``ens3f0`` for the
  function in slot 3, PF or VF), carrying the function's MAC;
* the representor end lives in the DPU namespace, named as
  :func:`representor_name` says (``pf3hpf``, ``pf0vf3``), and carries the
  function id and features in its interface alias.

Both ends are up with TX checksum offload off: veth defers the checksum to
the receiver, and the userspace OVS datapath forwards such packets with the
checksum never filled in, so TCP across it would fail.

``list()`` reads net functions from the namespaces themselves, so a restarted
agent sees what really exists; a veth pair lost with the "SoC" is simply
absent, and ``create()`` with the same spec brings back the same names, MAC
and BDF. A ``storage`` function has no netdev: it is recorded in a JSON file
in ``state_dir`` together with the identity of the DPU namespace, so it
survives agent restarts but, like a hot-plugged function, not the DPU
namespace being deleted and re-created.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from dpustack.drivers.functions import (
    MAX_SLOT, Function, FunctionDriver, FunctionSpec, FunctionType, host_bdf, representor_name,
)
from dpustack.drivers.options import DriverOptions, StatePath
from dpustack.errors import DriverError
from dpustack.linux import netns

#: Linux interface names are at most 15 characters (IFNAMSIZ - 1)
IFNAME_MAX = 15
#: the representor's alias starts with this, followed by JSON {"id", "features"}
ALIAS_PREFIX = "dpustack-function:"
_ALIAS_MAX = 255  # IFALIASZ - 1
_REPRESENTOR = re.compile(r"^(?:pf(?P<pf>\d+)hpf|pf0vf(?P<vf>\d+))$")
_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_TOOLS = ("ip", "ethtool")
_NETNS_NAME = r"^[A-Za-z0-9_.-]+$"


def host_ifname(slot: int, prefix: str = "ens") -> str:
    """The host NIC name of a net function: slot-based like systemd's (the function is device 0, function 0)."""
    return f"{prefix}{slot}f0"


def _default_state_dir() -> Path:
    """``$DPUSTACK_HOME/lab/functions`` (DPUSTACK_HOME defaulting to ~/.local/share/dpustack): the
    ``functions`` directory of a lab in its default place, for a driver made without ``state_dir``."""
    home = os.environ.get("DPUSTACK_HOME") or str(Path.home() / ".local/share/dpustack")
    return Path(home) / "lab" / "functions"


@dataclass(frozen=True)
class _NetPair:
    """A net function found in the namespaces; ``host`` is None when the host end is gone or foreign."""

    function: Function
    representor: netns.Link
    host: netns.Link | None


class LabFunctionOptions(DriverOptions):
    """[functions.lab]: the lab host and DPU namespaces the veth pairs join, the host NIC name
    prefix, and where storage functions are recorded (relative: under the agent's ``state_dir``)."""

    host_netns: str = Field(pattern=_NETNS_NAME, max_length=255)
    dpu_netns: str = Field(pattern=_NETNS_NAME, max_length=255)
    # host NICs are <prefix><slot>f0: 9 + len("190f0") fits a 15-character interface name
    host_prefix: str = Field("ens", pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=9)
    state_dir: StatePath = Field(Path("functions"), validate_default=True)

    @field_validator("dpu_netns")
    @classmethod
    def _two_namespaces(cls, dpu_netns: str, info: ValidationInfo) -> str:
        if dpu_netns == info.data.get("host_netns"):
            raise PydanticCustomError("same_namespace", "must differ from host_netns")
        return dpu_netns


class LabFunctionDriver(FunctionDriver):
    """Functions of one lab DPU (``dpu_netns``) plugged into one lab host (``host_netns``)."""

    options = LabFunctionOptions

    def __init__(self, host_netns: str, dpu_netns: str, *, host_prefix: str = "ens",
                 state_dir: str | os.PathLike[str] | None = None):
        longest = host_ifname(MAX_SLOT, host_prefix)
        if not host_prefix or len(longest) > IFNAME_MAX:
            raise DriverError(f"functions: host_prefix '{host_prefix}' is empty or too long: host NIC names "
                              f"such as '{longest}' must fit in {IFNAME_MAX} characters")
        self.host_netns = host_netns
        self.dpu_netns = dpu_netns
        self.host_prefix = host_prefix
        self.state_dir = Path(state_dir) if state_dir else _default_state_dir()
        self._storage = _StorageLedger(self.state_dir, dpu_netns)
        self._lock = threading.RLock()

    def validate(self) -> None:
        missing = [name for name in (self.host_netns, self.dpu_netns) if not netns.exists(name)]
        if missing:
            raise DriverError(f"functions: network namespace(s) {', '.join(repr(n) for n in missing)} "
                              f"do not exist (host '{self.host_netns}', DPU '{self.dpu_netns}')")
        tools = [tool for tool in _TOOLS if shutil.which(tool) is None]
        if tools:
            raise DriverError(f"functions: the lab driver needs {', '.join(tools)} on PATH")

    # -- FunctionDriver ---------------------------------------------------

    def create(self, spec: FunctionSpec, *, may_exist: bool = True) -> Function:
        wanted = self._function_for(spec)
        with self._lock, self._translated(f"create '{spec.id}'"):
            pairs = self._net_pairs()
            existing = self._find(spec.id, pairs)
            if existing is not None:
                return self._existing(existing, wanted, may_exist)
            self._check_slot_free(spec, pairs)
            if spec.id in pairs:  # a representor whose host end is gone or foreign: rebuild the pair
                self._delete_pair(pairs[spec.id])
            if wanted.kind == "storage":
                self._storage.add(wanted)
                return wanted
            return self._create_pair(wanted)

    def get(self, function_id: str) -> Function | None:
        with self._lock, self._translated(f"get '{function_id}'"):
            return self._find(function_id, self._net_pairs())

    def delete(self, function_id: str, *, if_exists: bool = True) -> None:
        with self._lock, self._translated(f"delete '{function_id}'"):
            pair = self._net_pairs().get(function_id)
            if pair is not None:
                self._delete_pair(pair)
            elif not self._storage.remove(function_id) and not if_exists:
                raise DriverError(f"functions.delete: function '{function_id}' does not exist")

    def list(self) -> list[Function]:
        with self._lock, self._translated("list"):
            found = [pair.function for pair in self._net_pairs().values() if pair.host is not None]
            return sorted(found + self._storage.functions(), key=lambda f: f.slot)

    # -- net functions: veth pairs ---------------------------------------

    def _create_pair(self, function: Function) -> Function:
        host = host_ifname(function.slot, self.host_prefix)
        alias = _alias(function)
        for namespace, name in ((self.host_netns, host), (self.dpu_netns, function.representor)):
            if netns.find_link(namespace, name) is not None:
                raise DriverError(f"functions.create '{function.id}': interface '{name}' already exists in "
                                  f"namespace '{namespace}' and is not a dpustack function")
        with netns.rtnl(self.host_netns) as ipr:
            ipr.link("add", ifname=host, kind="veth", address=function.mac,
                     peer={"ifname": function.representor, "net_ns_fd": self.dpu_netns})
        try:
            with netns.rtnl(self.dpu_netns) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=function.representor)[0], ifalias=alias)
            self._make_ready(host, function.representor)
        except Exception:
            with suppress(netns.NetnsError):  # keep the first error; the pair must not stay half made
                self._delete_link(self.dpu_netns, function.representor)  # its host end goes with it
            raise
        return function

    def _make_ready(self, host: str, representor: str) -> None:
        """Both ends up, TX checksum offload off on both (safe to repeat)."""
        for namespace, name in ((self.host_netns, host), (self.dpu_netns, representor)):
            with netns.rtnl(namespace) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            netns.run(namespace, ["ethtool", "-K", name, "tx", "off"])

    def _delete_pair(self, pair: _NetPair) -> None:
        self._delete_link(self.dpu_netns, pair.representor.name)
        if pair.host is not None:  # normally gone with its peer already
            self._delete_link(self.host_netns, pair.host.name)

    @staticmethod
    def _delete_link(namespace: str, name: str) -> None:
        with netns.rtnl(namespace) as ipr:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)

    def _net_pairs(self) -> dict[str, _NetPair]:
        """Net functions by id, read from the representors' aliases and their host ends."""
        host_links = {link.name: link for link in netns.links(self.host_netns)}
        pairs: dict[str, _NetPair] = {}
        for link in netns.links(self.dpu_netns):
            parsed = _parse_representor(link)
            if parsed is None:
                continue
            function_id, slot, type_, features = parsed
            host = host_links.get(host_ifname(slot, self.host_prefix))
            if host is None or host.kind != "veth" or host.index != link.peer_index:
                host = None
            pairs[function_id] = _NetPair(
                Function(id=function_id, slot=slot, type=type_, kind="net", mac=host.mac if host else None,
                         bdf=host_bdf(slot), representor=link.name, features=features),
                representor=link, host=host)
        return pairs

    # -- shared helpers ---------------------------------------------------

    def _find(self, function_id: str, pairs: dict[str, _NetPair]) -> Function | None:
        pair = pairs.get(function_id)
        if pair is not None:
            return pair.function if pair.host is not None else None
        return self._storage.get(function_id)

    def _existing(self, existing: Function, wanted: Function, may_exist: bool) -> Function:
        if not may_exist:
            raise DriverError(f"functions.create: function '{wanted.id}' already exists")
        if existing != wanted:
            raise DriverError(f"functions.create: function '{wanted.id}' exists with a different "
                              f"slot, type, kind, mac or features ({_describe(existing)}; asked for "
                              f"{_describe(wanted)})")
        if existing.kind == "net":  # converge: someone may have set an end down or offload on
            self._make_ready(host_ifname(existing.slot, self.host_prefix), existing.representor)
        return existing

    def _check_slot_free(self, spec: FunctionSpec, pairs: dict[str, _NetPair]) -> None:
        taken = [pair.function for pair in pairs.values()] + self._storage.functions()
        for other in taken:
            if other.slot == spec.slot and other.id != spec.id:
                raise DriverError(f"functions.create: slot {spec.slot} is taken by function '{other.id}'")

    def _function_for(self, spec: FunctionSpec) -> Function:
        """The function ``spec`` asks for, as this driver would report it."""
        if spec.type not in ("PF", "VF") or spec.kind not in ("net", "storage"):
            raise DriverError(f"functions.create '{spec.id}': unknown type '{spec.type}' or kind '{spec.kind}'")
        mac = spec.mac.lower() if spec.mac else None
        if mac is not None and (not _MAC.match(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00"):
            raise DriverError(f"functions.create '{spec.id}': mac '{spec.mac}' is not a unicast MAC address")
        if mac is None and spec.kind == "net":
            mac = self._default_mac(spec.slot, spec.type)
        function = Function(id=spec.id, slot=spec.slot, type=spec.type, kind=spec.kind, mac=mac,
                            bdf=host_bdf(spec.slot),
                            representor=representor_name(spec.slot, spec.type, spec.kind),
                            features=tuple(spec.features))
        if function.kind == "net" and len(_alias(function).encode()) > _ALIAS_MAX:
            raise DriverError(f"functions.create '{spec.id}': the id and features are too long to record "
                              f"on the representor (at most {_ALIAS_MAX} bytes)")
        return function

    def _default_mac(self, slot: int, type_: FunctionType) -> str:
        """A stable locally administered MAC for a net function created without one."""
        digest = hashlib.sha256(f"{self.dpu_netns}/{slot}/{type_}".encode()).digest()
        return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except netns.NetnsError as exc:
            raise DriverError(f"functions.{action}: {exc.message}") from exc


class _StorageLedger:
    """Storage functions of one DPU namespace, in ``<state_dir>/<dpu_netns>.storage-functions.json``.

    The file also records the namespace's identity; records made in an
    earlier incarnation of the namespace (the lab was torn down and started
    again) are ignored, as a rebooted DPU forgets its hot-plugged functions.
    """

    def __init__(self, state_dir: Path, dpu_netns: str):
        self.path = state_dir / f"{dpu_netns}.storage-functions.json"
        self.dpu_netns = dpu_netns

    def functions(self) -> list[Function]:
        return [self._function(function_id, record) for function_id, record in self._load().items()]

    def get(self, function_id: str) -> Function | None:
        record = self._load().get(function_id)
        return None if record is None else self._function(function_id, record)

    def add(self, function: Function) -> None:
        records = self._load()
        records[function.id] = {"slot": function.slot, "type": function.type, "mac": function.mac,
                                "features": list(function.features)}
        self._save(records)

    def remove(self, function_id: str) -> bool:
        records = self._load()
        if records.pop(function_id, None) is None:
            return False
        self._save(records)
        return True

    @staticmethod
    def _function(function_id: str, record: dict[str, Any]) -> Function:
        return Function(id=function_id, slot=record["slot"], type=record["type"], kind="storage",
                        mac=record["mac"], bdf=host_bdf(record["slot"]),
                        representor=representor_name(record["slot"], record["type"], "storage"),
                        features=tuple(record["features"]))

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DriverError(f"functions: cannot read the storage function records {self.path}: {exc}") from exc
        if data.get("netns_identity") != netns.identity(self.dpu_netns):
            return {}
        return data.get("functions", {})

    def _save(self, records: dict[str, dict[str, Any]]) -> None:
        data = {"dpu_netns": self.dpu_netns, "netns_identity": netns.identity(self.dpu_netns), "functions": records}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".tmp")
            partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(partial, self.path)
        except OSError as exc:
            raise DriverError(f"functions: cannot write the storage function records {self.path}: {exc}") from exc


def _alias(function: Function) -> str:
    return ALIAS_PREFIX + json.dumps({"id": function.id, "features": list(function.features)},
                                     separators=(",", ":"))


def _parse_representor(link: netns.Link) -> tuple[str, int, FunctionType, tuple[str, ...]] | None:
    """(id, slot, type, features) of a representor dpustack made, None for any other interface."""
    named = _REPRESENTOR.match(link.name)
    if named is None or link.kind != "veth" or not (link.alias or "").startswith(ALIAS_PREFIX):
        return None
    try:
        recorded = json.loads(link.alias[len(ALIAS_PREFIX):])
        function_id, features = str(recorded["id"]), tuple(str(f) for f in recorded.get("features", ()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if named["pf"] is not None:
        return function_id, int(named["pf"]), "PF", features
    return function_id, int(named["vf"]), "VF", features


def _describe(function: Function) -> str:
    features = ",".join(function.features) or "none"
    return f"slot {function.slot} {function.type} {function.kind} mac {function.mac} features {features}"
