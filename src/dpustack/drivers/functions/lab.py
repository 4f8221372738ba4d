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

Machine mode (``machine_uri``, ``machine`` and ``vhost_dir`` given): the host
is also a libvirt domain (:mod:`dpustack.libvirt_host`), and each function is
really hot-plugged into it at the slot's root port, where the guest sees it
at exactly :func:`host_bdf` (:mod:`.lab_machine`). A net function's host end
then carries no traffic of the namespace's own: a tap ``tap<slot>`` is wired
to it with tc mirred both ways (:mod:`.lab_wire`) and the guest's virtio NIC
is on the tap. A storage function is a virtio disk on the vhost-user-blk
socket its volume is served on, ``<vhost_dir>/<function id>.sock``: the
volume must be attached first (no socket, no plug), and the disks are
bootable in slot order. A function counts (``list``,
``get``) only with its device in its slot, of the running machine or, when
it is off, of its definition; ``create`` makes whatever is missing again (the
veth pair, the tap, the wire, the device) and ``delete`` unplugs the device
first, returning once the guest let it go. The machine may be off for all of
it: its definition changes then, and the devices are there at its next start.

Tap mode (``taps = true``, a VM node's host): each net function's host end
gets its wired tap ``tap<slot>`` as in machine mode, but nothing is plugged:
the host namespace's hypervisor opens the tap for the VM it gives the
function to (:mod:`dpustack.drivers.hypervisor.libvirt_lab`). A net function
counts only with its tap wired.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from dpustack.drivers.functions import (
    MAX_SLOT, Function, FunctionDriver, FunctionSpec, FunctionType, host_bdf, lab_wire, representor_name,
)
from dpustack.drivers.functions.lab_machine import MachineSlots, tap_name
from dpustack.drivers.options import DriverOptions, StatePath
from dpustack.errors import DriverError
from dpustack.libvirt_host import Device
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
_MACHINE_OPTIONS = ("machine_uri", "machine", "vhost_dir")

log = logging.getLogger(__name__)


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
    prefix, and where storage functions are recorded (relative: under the agent's ``state_dir``).
    Machine mode, all three or none: the libvirt URI of the host's hypervisor, the host's domain, and
    the directory of the storage functions' vhost-user-blk sockets (relative: under ``state_dir``). Tap
    mode (``taps``): a wired tap for each net function, for the host's hypervisor to give to a VM."""

    host_netns: str = Field(pattern=_NETNS_NAME, max_length=255)
    dpu_netns: str = Field(pattern=_NETNS_NAME, max_length=255)
    # host NICs are <prefix><slot>f0: 9 + len("190f0") fits a 15-character interface name
    host_prefix: str = Field("ens", pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=9)
    state_dir: StatePath = Field(Path("functions"), validate_default=True)
    machine_uri: str | None = Field(None, min_length=1)
    machine: str | None = Field(None, min_length=1)
    vhost_dir: StatePath | None = None
    taps: bool = False

    @field_validator("dpu_netns")
    @classmethod
    def _two_namespaces(cls, dpu_netns: str, info: ValidationInfo) -> str:
        if dpu_netns == info.data.get("host_netns"):
            raise PydanticCustomError("same_namespace", "must differ from host_netns")
        return dpu_netns

    @model_validator(mode="after")
    def _machine_options_together(self) -> "LabFunctionOptions":
        given = [name for name in _MACHINE_OPTIONS if getattr(self, name) is not None]
        if given and len(given) < len(_MACHINE_OPTIONS):
            missing = next(name for name in _MACHINE_OPTIONS if name not in given)
            error = PydanticCustomError("machine_options", "required with {given} (machine mode takes "
                                        "machine_uri, machine and vhost_dir together)", {"given": ", ".join(given)})
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=error, loc=(missing,), input=None)])
        return self


class LabFunctionDriver(FunctionDriver):
    """Functions of one lab DPU (``dpu_netns``) plugged into one lab host (``host_netns``)."""

    options = LabFunctionOptions

    def __init__(self, host_netns: str, dpu_netns: str, *, host_prefix: str = "ens",
                 state_dir: str | os.PathLike[str] | None = None, machine_uri: str | None = None,
                 machine: str | None = None, vhost_dir: str | os.PathLike[str] | None = None, taps: bool = False):
        longest = host_ifname(MAX_SLOT, host_prefix)
        if not host_prefix or len(longest) > IFNAME_MAX:
            raise DriverError(f"functions: host_prefix '{host_prefix}' is empty or too long: host NIC names "
                              f"such as '{longest}' must fit in {IFNAME_MAX} characters")
        machine_options = {"machine_uri": machine_uri, "machine": machine, "vhost_dir": vhost_dir}
        if any(machine_options.values()) and not all(machine_options.values()):
            missing = next(name for name, value in machine_options.items() if not value)
            raise DriverError(f"functions: {missing} is missing: machine mode takes machine_uri, machine and "
                              "vhost_dir together", field=missing)
        self.host_netns = host_netns
        self.dpu_netns = dpu_netns
        self.host_prefix = host_prefix
        self.state_dir = Path(state_dir) if state_dir else _default_state_dir()
        self._storage = _StorageLedger(self.state_dir, dpu_netns)
        #: machine mode: the host machine's slots
        self.machine = (MachineSlots(machine_uri, machine, Path(vhost_dir))
                        if machine_uri and machine and vhost_dir else None)
        #: a wired tap for each net function (machine mode's NICs are on them)
        self.taps = taps or self.machine is not None
        self._lock = threading.RLock()

    def validate(self) -> None:
        missing = [name for name in (self.host_netns, self.dpu_netns) if not netns.exists(name)]
        if missing:
            raise DriverError(f"functions: network namespace(s) {', '.join(repr(n) for n in missing)} "
                              f"do not exist (host '{self.host_netns}', DPU '{self.dpu_netns}')")
        tools = [tool for tool in _TOOLS if shutil.which(tool) is None]
        if tools:
            raise DriverError(f"functions: the lab driver needs {', '.join(tools)} on PATH")
        if self.machine is not None:
            slots = self.machine.slots("validate")
            if not slots:
                raise DriverError(f"functions.validate: machine '{self.machine.name}' has no slots "
                                  "(root ports with the alias ua-rp<slot>)")
            log.info("functions: machine '%s' has slots 0 to %d (%d)", self.machine.name, max(slots),
                     len(slots))

    # -- FunctionDriver ---------------------------------------------------

    def create(self, spec: FunctionSpec, *, may_exist: bool = True) -> Function:
        wanted = self._function_for(spec)
        action = f"create '{spec.id}'"
        with self._lock, self._translated(action):
            devices = self._machine_devices(action, wanted.slot)
            pairs = self._net_pairs()
            existing = self._find(spec.id, pairs)
            if existing is not None:
                if not may_exist and self._complete(existing, devices):
                    raise DriverError(f"functions.create: function '{wanted.id}' already exists")
                if existing != wanted:
                    raise DriverError(f"functions.create: function '{wanted.id}' exists with a different "
                                      f"slot, type, kind, mac or features ({_describe(existing)}; asked for "
                                      f"{_describe(wanted)})")
            else:
                self._check_slot_free(spec, pairs)
            if self.machine is not None:
                self.machine.check(action, wanted, devices.get(wanted.slot))
            if existing is None:
                if spec.id in pairs:  # a representor whose host end is gone or foreign: rebuild the pair
                    self._delete_pair(pairs[spec.id])
                if wanted.kind == "storage":
                    self._storage.add(wanted)
                else:
                    self._create_pair(wanted)
            elif wanted.kind == "net":  # converge: someone may have set an end down or offload on
                self._make_ready(host_ifname(wanted.slot, self.host_prefix), wanted.representor)
            if self.taps:
                self._plug(action, wanted, devices, made=existing is None)
            return wanted

    def get(self, function_id: str) -> Function | None:
        action = f"get '{function_id}'"
        with self._lock, self._translated(action):
            found = self._find(function_id, self._net_pairs())
            if found is None or not self.taps:
                return found
            return found if self._complete(found, self._all_devices(action)) else None

    def delete(self, function_id: str, *, if_exists: bool = True) -> None:
        action = f"delete '{function_id}'"
        with self._lock, self._translated(action):
            pair = self._net_pairs().get(function_id)
            found = pair.function if pair is not None else self._storage.get(function_id)
            if found is None:
                if not if_exists:
                    raise DriverError(f"functions.delete: function '{function_id}' does not exist")
                return
            slot = found.slot
            if self.machine is not None:  # the guest lets go of the device before its back end goes
                self.machine.unplug(action, slot)
            if pair is not None:
                if self.taps:
                    lab_wire.remove_wire(self.host_netns, tap_name(slot))
                self._delete_pair(pair)
            else:
                self._storage.remove(function_id)

    def list(self) -> list[Function]:
        with self._lock, self._translated("list"):
            found = [pair.function for pair in self._net_pairs().values() if pair.host is not None]
            found += self._storage.functions()
            if self.taps:
                devices = self._all_devices("list")
                found = [function for function in found if self._complete(function, devices)]
            return sorted(found, key=lambda f: f.slot)

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
            if self.taps:  # a pure wire to the guest's NIC: the namespace says nothing on it
                with netns.rtnl(self.host_netns) as ipr:
                    lab_wire.no_ipv6(ipr, ipr.link_lookup(ifname=host)[0])
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

    # -- machine mode -----------------------------------------------------

    def _machine_devices(self, action: str, slot: int) -> dict[int, Device]:
        """The machine's devices by slot, after checking it has ``slot`` (nothing without a machine)."""
        if self.machine is None:
            return {}
        self.machine.check_slot(action, slot)
        return self.machine.devices(action)

    def _all_devices(self, action: str) -> dict[int, Device]:
        """The machine's devices by slot (none without a machine)."""
        return self.machine.devices(action) if self.machine is not None else {}

    def _complete(self, function: Function, devices: dict[int, Device]) -> bool:
        """Whether a function found in the namespaces is whole: in machine mode also its device in its slot,
        and with taps a net function's tap wired to its host end."""
        if self.machine is not None and not self.machine.holds(function, devices.get(function.slot)):
            return False
        return not self.taps or function.kind != "net" or lab_wire.is_wired(
            self.host_netns, tap_name(function.slot), host_ifname(function.slot, self.host_prefix))

    def _plug(self, action: str, function: Function, devices: dict[int, Device], *, made: bool) -> None:
        """Wire a net function's tap, then, in machine mode, plug the function's device unless the machine has
        it; on failure, remove the function again if this call ``made`` it."""
        device = devices.get(function.slot)
        try:
            if function.kind == "net":
                tap, host = tap_name(function.slot), host_ifname(function.slot, self.host_prefix)
                if lab_wire.ensure_wire(self.host_netns, tap, host) and device is not None \
                        and self.machine is not None and self.machine.running(action):
                    # the running machine still has the tap that is gone open: plug its NIC again, then wire
                    # the tap again (libvirt clears a NIC's tap's tc when it unplugs the NIC)
                    self.machine.unplug(action, function.slot)
                    device = None
                    lab_wire.ensure_wire(self.host_netns, tap, host)
            if device is None and self.machine is not None:
                self.machine.plug(action, function)
        except (DriverError, netns.NetnsError):
            if made:
                with suppress(DriverError, netns.NetnsError):  # keep the first error
                    self._discard(function)
            raise

    def _discard(self, function: Function) -> None:
        """Remove what a failed create made in the namespaces or the records."""
        if function.kind == "storage":
            self._storage.remove(function.id)
            return
        lab_wire.remove_wire(self.host_netns, tap_name(function.slot))
        self._delete_link(self.dpu_netns, function.representor)

    # -- shared helpers ---------------------------------------------------

    def _find(self, function_id: str, pairs: dict[str, _NetPair]) -> Function | None:
        """The function as the namespaces or the records have it (the machine not asked)."""
        pair = pairs.get(function_id)
        if pair is not None:
            return pair.function if pair.host is not None else None
        return self._storage.get(function_id)

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
