"""A host machine that is a libvirt domain: its power, and the devices in its PCIe hot-plug slots.

    machine = HostMachine("qemu+unix:///system?socket=/run/host-1/libvirt-sock", "host-bm-1")
    machine.plug_disk(0, Path("vhost/storage-v1.sock"), "slot0", boot_order=1)  # the host sees 0000:41:00.0
    machine.start()
    machine.plug_net(2, "tap2", "52:54:00:12:34:56", "slot2")                # hot-plugged at 0000:43:00.0
    machine.unplug("slot2")                                                   # returns once the host let go

Everything goes through libvirt-python, a new connection per call (a daemon
restart is harmless); libvirt's refusals come as DriverError with its reason.

The slots are the domain's PCIe root ports whose user alias is
``ua-rp<slot>`` (:func:`port_alias`); a device in slot N sits alone on root
port N, where the host sees it at :func:`dpustack.drivers.functions.host_bdf`
of N, ``0000:{0x41+N:02x}:00.0`` (:mod:`dpustack.lab.host_machine` makes
domains whose buses are numbered so).

Hot-plug: with the machine on, a device is added to and removed from both
the running machine and its definition (``VIR_DOMAIN_AFFECT_LIVE|CONFIG``);
off, from its definition only, so it is there at the next start. Device
aliases are libvirt user aliases, ``ua-<id>``, ``id`` the caller's.

The module's helpers that work on any domain (:func:`lookup`, :func:`power_off`, :func:`forget`,
:func:`unplug`, :func:`failing`, :func:`user_alias`) serve the hypervisor driver's domains too
(:mod:`dpustack.drivers.hypervisor.libvirt_domains`).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt

from dpustack.drivers.functions import host_bdf
from dpustack.errors import DriverError

UNPLUG_TIMEOUT = 15.0
ALIAS_PREFIX = "ua-"
_PORT_ALIAS = re.compile(r"^ua-rp(\d+)$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_ON, _OFF = "on", "off"


@dataclass(frozen=True)
class Device:
    """One device plugged into a slot: what the caller named it and where the guest sees it."""

    alias: str  # the caller's id (libvirt's alias without "ua-")
    kind: str  # "net" or "disk"
    slot: int
    bdf: str
    mac: str | None = None  # net
    tap: str | None = None  # net
    socket: str | None = None  # disk: the vhost-user-blk socket
    boot_order: int | None = None


@dataclass(frozen=True)
class MachineInfo:
    """The machine's hardware, as a BMC reports it."""

    vcpus: int
    memory_mib: int



class HostMachine:
    """The domain ``name`` on the libvirtd at ``uri``."""

    def __init__(self, uri: str, name: str):
        self.uri = uri
        self.name = name

    # ------------------------------------------------------------ lifecycle
    def define(self, xml: str) -> None:
        """Define the (persistent) domain from ``xml``, off; DriverError if one by that name exists."""
        with self._connection() as connection:
            if lookup(connection, self.name) is not None:
                raise DriverError(f"a domain '{self.name}' is defined already on {self.uri}")
            with failing(f"cannot define domain '{self.name}'"):
                connection.defineXML(xml)

    def undefine(self) -> None:
        """Power off and forget the domain with everything libvirt keeps of it; nothing to do if it is gone."""
        with self._connection() as connection:
            domain = lookup(connection, self.name)
            if domain is not None:
                forget(domain, f"domain '{self.name}'")

    def exists(self) -> bool:
        with self._connection() as connection:
            return lookup(connection, self.name) is not None

    def start(self) -> None:
        """Power on (nothing to do if on); returns once QEMU runs. DriverError with libvirt's reason if it
        cannot start (the machine is off then)."""
        with self._domain() as domain:
            if not domain.isActive():
                with failing(f"cannot start domain '{self.name}'"):
                    domain.create()

    def destroy(self) -> None:
        """Hard power off (nothing to do if off); returns once QEMU has exited."""
        with self._domain() as domain:
            power_off(domain, f"domain '{self.name}'")

    def shutdown(self) -> None:
        """Press the ACPI power button (the guest decides); nothing to do if off."""
        with self._domain() as domain:
            if domain.isActive():
                with failing(f"cannot shut down domain '{self.name}'"):
                    domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def reset(self) -> None:
        """Press the reset button; DriverError if the machine is off."""
        with self._domain() as domain:
            if not domain.isActive():
                raise DriverError(f"domain '{self.name}' is off: power it on instead of resetting it")
            with failing(f"cannot reset domain '{self.name}'"):
                domain.reset(0)

    def state(self) -> str:
        """"on" (QEMU runs, also paused) or "off"."""
        with self._domain() as domain:
            return _ON if domain.isActive() else _OFF

    def wait_state(self, wanted: str, timeout: float) -> None:
        """Wait until the machine is ``wanted`` ("on"/"off"); DriverError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.state() != wanted:
            if time.monotonic() > deadline:
                raise DriverError(f"domain '{self.name}' is not {wanted} after {timeout:g} s")
            time.sleep(0.05)

    def info(self) -> MachineInfo:
        with self._domain() as domain:
            with failing(f"cannot read domain '{self.name}'"):
                _, max_memory_kib, _, vcpus, _ = domain.info()
        return MachineInfo(vcpus=vcpus, memory_mib=max_memory_kib // 1024)

    # ------------------------------------------------------------- devices
    def plug_net(self, slot: int, tap: str, mac: str, alias: str) -> Device:
        """A virtio NIC in ``slot`` on the caller's ``tap`` (made beforehand in the host namespace)."""
        element = ET.Element("interface", type="ethernet")
        _sub(element, "mac", address=mac)
        _sub(element, "target", dev=tap, managed="no")
        _sub(element, "model", type="virtio")
        return self._plug(element, slot, alias)

    def plug_disk(self, slot: int, socket: Path, alias: str, boot_order: int | None = None) -> Device:
        """A virtio disk in ``slot`` served by the vhost-user-blk back end at ``socket`` (QEMU reconnects every
        5 s when the back end goes away); bootable with ``boot_order`` (lowest first)."""
        element = ET.Element("disk", type="vhostuser", device="disk")
        _sub(element, "driver", name="qemu", type="raw")
        source = _sub(element, "source", type="unix", path=str(Path(socket).resolve()))
        _sub(source, "reconnect", enabled="yes", timeout="5")
        _sub(element, "target", dev=_disk_name(slot), bus="virtio")
        if boot_order is not None:
            _sub(element, "boot", order=str(boot_order))
        return self._plug(element, slot, alias)

    def unplug(self, alias: str, *, timeout: float = UNPLUG_TIMEOUT, missing_ok: bool = False) -> None:
        """Remove the device; see :func:`unplug`."""
        with self._domain() as domain:
            unplug(domain, alias, f"domain '{self.name}'", timeout=timeout, missing_ok=missing_ok)

    def slots(self) -> list[int]:
        """The machine's slots (its root ports with a slot alias), in order."""
        with self._domain() as domain:
            return sorted(_root_ports(_xml(domain, _view(domain))))

    def devices(self) -> list[Device]:
        """The devices in the slots, by slot: of the running machine when it is on, else of its definition."""
        with self._domain() as domain:
            return _devices(_xml(domain, _view(domain)))

    # ----------------------------------------------------------- internals
    def _plug(self, element: ET.Element, slot: int, alias: str) -> Device:
        user = user_alias(alias)
        _sub(element, "alias", name=user)
        with self._domain() as domain:
            active = domain.isActive()
            current = _xml(domain, _view(domain))
            ports = _root_ports(current)
            if slot not in ports:
                raise DriverError(f"domain '{self.name}' has slots 0 to {len(ports) - 1}, no slot {slot}", field="slot")
            _sub(element, "address", type="pci", domain="0x0000", bus=f"{ports[slot]:#04x}", slot="0x00",
                 function="0x0")
            taken = {device.slot: device.alias for device in _devices(current)}
            if slot in taken:
                raise DriverError(f"slot {slot} of domain '{self.name}' holds '{taken[slot]}' already", field="slot")
            if any(_has_alias(domain, user, flags) for flags in {_view(domain), libvirt.VIR_DOMAIN_XML_INACTIVE}):
                raise DriverError(f"domain '{self.name}' has a device '{alias}' already", field="alias")
            definition = _xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE)
            what = f"cannot plug '{alias}' into slot {slot} of domain '{self.name}'"
            with failing(what):
                domain.connect().defineXML(_with_device(definition, element))
            if active:
                try:
                    with failing(what):
                        domain.attachDeviceFlags(_live_element(current, element), libvirt.VIR_DOMAIN_AFFECT_LIVE)
                except DriverError:
                    with failing(f"cannot undo the plug of '{alias}' into the definition of '{self.name}'"):
                        domain.connect().defineXML(ET.tostring(definition, encoding="unicode"))
                    raise
            return next(device for device in _devices(_xml(domain, _view(domain))) if device.alias == alias)

    def _connection(self) -> AbstractContextManager[libvirt.virConnect]:
        return opened(self.uri, f"cannot connect to libvirt at {self.uri}")

    @contextmanager
    def _domain(self) -> Iterator[libvirt.virDomain]:
        with self._connection() as connection:
            domain = lookup(connection, self.name)
            if domain is None:
                raise DriverError(f"no domain '{self.name}' on {self.uri}")
            yield domain


# ----------------------------------------------------------------- helpers
def port_alias(slot: int) -> str:
    """The user alias of the root port of ``slot``."""
    return f"{ALIAS_PREFIX}rp{slot}"


@contextmanager
def opened(uri: str, what: str) -> Iterator[libvirt.virConnect]:
    """A connection to ``uri`` for the block, closed after it; DriverError saying ``what`` if it cannot open."""
    with failing(what):
        connection = connect(uri)
    try:
        yield connection
    finally:
        connection.close()


def connect(uri: str) -> libvirt.virConnect:
    """A connection to ``uri``; libvirt's errors come as exceptions only, never printed on stderr."""
    libvirt.registerErrorHandler(_ignore_error, None)
    return libvirt.open(uri)


def power_off(domain: libvirt.virDomain, label: str) -> None:
    """Destroy ``domain`` (``label`` names it in errors) if it runs; returns once QEMU has exited. A domain
    that went off (or away) by itself meanwhile is fine."""
    if not _active(domain):
        return
    try:
        domain.destroy()
    except libvirt.libvirtError as exc:
        if _active(domain):  # not merely gone by itself meanwhile
            raise DriverError(f"cannot power off {label}: {exc.get_error_message()}") from exc


def forget(domain: libvirt.virDomain, label: str) -> None:
    """Power ``domain`` off and undefine it with its managed save, snapshot and checkpoint metadata and NVRAM
    (a transient domain is gone once off)."""
    power_off(domain, label)
    with failing(f"cannot undefine {label}"):
        try:
            persistent = domain.isPersistent()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return  # transient: gone with its QEMU
            raise
        if persistent:
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                 | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def unplug(domain: libvirt.virDomain, alias: str, label: str, *, timeout: float = UNPLUG_TIMEOUT,
           missing_ok: bool = False) -> None:
    """Remove device ``alias`` (the caller's id) from ``domain`` (``label`` names it in errors): from the
    running machine and from the definition, whichever has it; with the machine on, return only once it is
    gone from the running machine (DriverError after ``timeout`` s: the guest did not release it; it is gone
    from the definition anyway). A device the domain does not have is a DriverError, or nothing to do when
    ``missing_ok``."""
    user = user_alias(alias)
    live = _active(domain) and _has_alias(domain, user, 0)
    with failing(f"cannot read {label}"):
        persistent = domain.isPersistent()
    config = persistent and _has_alias(domain, user, libvirt.VIR_DOMAIN_XML_INACTIVE)
    if not (live or config):
        if missing_ok:
            return
        raise DriverError(f"{label} has no device '{alias}'", field="alias")
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0)
    with failing(f"cannot unplug '{alias}' from {label}"):
        domain.detachDeviceAlias(user, flags)
    deadline = time.monotonic() + timeout
    while live and _active(domain) and _has_alias(domain, user, 0):
        if time.monotonic() > deadline:
            raise DriverError(f"device '{alias}' of {label} is still present {timeout:g} s after its unplug: "
                              "the guest did not release it")
        time.sleep(0.02)


def _active(domain: libvirt.virDomain) -> bool:
    """Whether ``domain`` runs; False once it is gone (a transient domain that stopped)."""
    try:
        return bool(domain.isActive())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise DriverError(f"cannot read the state of a domain: {exc.get_error_message()}") from exc


def _ignore_error(_context: object, _error: object) -> None:
    """libvirt's default handler prints every error, even those a caller expects and handles."""


@contextmanager
def failing(what: str) -> Iterator[None]:
    """Turn a libvirt error into a DriverError saying ``what`` failed and libvirt's reason."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise DriverError(f"{what}: {exc.get_error_message() or exc}") from exc


def lookup(connection: libvirt.virConnect, name: str, *, by_uuid: bool = False) -> libvirt.virDomain | None:
    """The domain named ``name`` (with that UUID: ``by_uuid``), None if there is none."""
    try:
        return connection.lookupByUUIDString(name) if by_uuid else connection.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise DriverError(f"cannot look up domain '{name}': {exc.get_error_message()}") from exc


def _view(domain: libvirt.virDomain) -> int:
    """XMLDesc flags of what the machine has now: the running machine's, else its definition's."""
    return 0 if domain.isActive() else libvirt.VIR_DOMAIN_XML_INACTIVE


def _xml(domain: libvirt.virDomain, flags: int) -> ET.Element:
    with failing("cannot read a domain's XML"):
        return ET.fromstring(domain.XMLDesc(flags))


def _with_device(definition: ET.Element, element: ET.Element) -> str:
    """``definition`` (left as it is) plus ``element``, as XML to define.

    libvirt refuses a device's ``<boot order>`` next to an ``<os><boot dev>``, and puts ``<boot dev='hd'/>``
    into every definition whose devices have no boot order: attaching a first bootable disk to the
    definition fails, so the definition is rewritten without ``<os><boot>`` instead.
    """
    updated = ET.fromstring(ET.tostring(definition))
    updated.find("devices").append(element)
    if updated.find("devices/*/boot") is not None:
        os_element = updated.find("os")
        for boot in os_element.findall("boot"):
            os_element.remove(boot)
    return ET.tostring(updated, encoding="unicode")


def _live_element(live: ET.Element, element: ET.Element) -> str:
    """``element`` as the running machine takes it: without its boot order if that machine was started
    with ``<os><boot dev>`` (no device had one then), which libvirt does not let per-device boot orders join."""
    if live.find("os/boot") is None:
        return ET.tostring(element, encoding="unicode")
    copy = ET.fromstring(ET.tostring(element))
    for boot in copy.findall("boot"):
        copy.remove(boot)
    return ET.tostring(copy, encoding="unicode")


def _has_alias(domain: libvirt.virDomain, user: str, flags: int) -> bool:
    return _xml(domain, flags).find(f"devices/*/alias[@name='{user}']") is not None


def _root_ports(domain: ET.Element) -> dict[int, int]:
    """Slot → controller index of the domain's root ports (ours: alias ua-rp<slot>)."""
    ports = {}
    for controller in domain.iterfind("devices/controller[@model='pcie-root-port']"):
        alias = controller.find("alias")
        match = _PORT_ALIAS.match(alias.get("name", "")) if alias is not None else None
        if match:
            ports[int(match.group(1))] = int(controller.get("index"))
    return ports


def _devices(domain: ET.Element) -> list[Device]:
    slot_of = {index: slot for slot, index in _root_ports(domain).items()}
    found = []
    for element in domain.iterfind("devices/*"):
        if element.tag not in ("interface", "disk"):
            continue
        alias, address = element.find("alias"), element.find("address")
        if alias is None or address is None or not alias.get("name", "").startswith(ALIAS_PREFIX):
            continue
        slot = slot_of.get(int(address.get("bus", "-1"), 0))
        if slot is None:
            continue
        common = {"alias": alias.get("name")[len(ALIAS_PREFIX):], "slot": slot, "bdf": host_bdf(slot)}
        boot = element.find("boot")
        boot_order = int(boot.get("order")) if boot is not None else None
        if element.tag == "interface":
            found.append(Device(kind="net", mac=_attr(element, "mac", "address"),
                                tap=_attr(element, "target", "dev"), boot_order=boot_order, **common))
        else:
            found.append(Device(kind="disk", socket=_attr(element, "source", "path"), boot_order=boot_order,
                                **common))
    return sorted(found, key=lambda device: device.slot)


def _attr(element: ET.Element, child: str, name: str) -> str | None:
    found = element.find(child)
    return found.get(name) if found is not None else None


def user_alias(alias: str) -> str:
    """The libvirt user alias of the caller's device id ``alias``; DriverError if it is not an id."""
    if not _ID.match(alias):
        raise DriverError(f"a device id is 1 to 60 letters, digits, '-' or '_', not {alias!r}", field="alias")
    return ALIAS_PREFIX + alias


def _disk_name(slot: int) -> str:
    """vda for slot 0 … vdz, vdaa…: a disk's target name, unique because its slot is."""
    letters = ""
    number = slot + 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return "vd" + letters


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element