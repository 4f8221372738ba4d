"""A lab bare-metal host as a real machine: one libvirt domain (QEMU, TCG) on the host's private libvirtd.

    machine = HostMachine(daemon.uri, "bm-1")
    machine.define(console_log=Path("bm-1/console.log"), command_socket=Path("bm-1/ttyS1.sock"))
    machine.plug_disk(0, Path("vhost/sf-boot.sock"), "boot", boot_order=1)   # the guest sees 0000:41:00.0
    machine.start()
    machine.plug_net(2, "tap-vf2", "52:54:00:12:34:56", "nic-2")             # hot-plugged at 0000:43:00.0
    machine.unplug("nic-2")                                                 # returns once the guest let go

Everything goes through libvirt-python (a new connection per call, so a daemon restart is harmless).

The machine: q35 with ACPI, 1 vCPU and 256 MiB (shared memfd memory, which
vhost-user back ends need to map it), no graphics, no NIC of its own, no USB,
no balloon; ``ttyS0`` a pty (what ``virDomainOpenConsole`` attaches to)
logged to ``console_log``; ``ttyS1`` a unix socket the machine listens on at
``command_socket`` (the lab's command channel into the guest). It boots from
the disk with the lowest ``boot_order``; power-off destroys it, a reboot
restarts it.

The slots: ``root_ports`` PCIe root ports (16 by default, at most
:data:`MAX_ROOT_PORTS`); a device in slot N sits alone on root port N, where
the guest sees it at ``0000:{0x41+N:02x}:00.0`` (:func:`guest_bdf`). The root
ports sit on the root complex (``pcie.0``, devices 02.0, 03.0…) behind one
empty port at 01.0 that reserves buses 0x01–0x40 (QEMU's ``bus-reserve``, set
through libvirt's ``<qemu:override>``), so the firmware numbers port N's bus
0x41+N. Root ports there get QEMU 7.2's ACPI hot-plug on q35: an unplug is
over in about 0.15 s. (Behind a ``pxb-pcie`` expander with bus number 64 the
BDFs are the same but only native PCIe hot-plug works, and Linux's pciehp
takes about 6.4 s per unplug: its 5 s attention-button delay.) Controllers
and device addresses are all explicit, so the layout never depends on
libvirt's address assignment.

Hot-plug: with the machine on, a device is added to and removed from both
the running machine and its definition (``VIR_DOMAIN_AFFECT_LIVE|CONFIG``);
off, from its definition only, so it is there at the next start. Device
aliases are libvirt user aliases, ``ua-<id>``, ``id`` the caller's.
Paths in the domain are seen by the daemon: they must not be under the
directories its mount namespace hides (see :mod:`dpustack.lab.libvirt_daemon`).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt

from dpustack.lab.libvirt_daemon import connect
from dpustack.lab.state import LabError

QEMU = "/usr/bin/qemu-system-x86_64"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ROOT_PORTS = 16
MAX_ROOT_PORTS = 29  # root complex devices 02.0–1e.0 (1f.x is the chipset's)
MEMORY_MIB = 256
VCPUS = 1
FIRST_BUS = 0x41  # the bus behind root port 0
UNPLUG_TIMEOUT = 15.0
ALIAS_PREFIX = "ua-"
_GAP_ALIAS = "ua-bus-gap"
_FIRST_PORT_INDEX = 2  # controller index of root port 0: 0 is pcie.0, 1 the gap
_PORT_ALIAS = re.compile(r"^ua-rp(\d+)$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_ON, _OFF = "on", "off"

ET.register_namespace("qemu", QEMU_NS)


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


def guest_bdf(slot: int) -> str:
    """The PCI address at which the guest sees the device in ``slot``."""
    return f"0000:{FIRST_BUS + slot:02x}:00.0"


def domain_xml(name: str, *, console_log: Path, command_socket: Path, memory_mib: int = MEMORY_MIB,
               vcpus: int = VCPUS, root_ports: int = ROOT_PORTS) -> str:
    """The libvirt definition of a lab host (see the module's docstring); no devices in its slots yet."""
    if not 1 <= root_ports <= MAX_ROOT_PORTS:
        raise LabError(f"a lab host has 1 to {MAX_ROOT_PORTS} root ports, not {root_ports}", field="root_ports")
    if vcpus < 1 or memory_mib < 64:
        raise LabError(f"a lab host needs at least 1 vCPU and 64 MiB (asked: {vcpus}, {memory_mib} MiB)")
    domain = ET.Element("domain", type="qemu")
    _sub(domain, "name", name)
    _sub(domain, "memory", str(memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(vcpus))
    backing = _sub(domain, "memoryBacking")
    _sub(backing, "source", type="memfd")
    _sub(backing, "access", mode="shared")
    _sub(_sub(domain, "os"), "type", "hvm", arch="x86_64", machine="q35")
    _sub(_sub(domain, "features"), "acpi")
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        _sub(domain, event, action)
    devices = _sub(domain, "devices")
    _sub(devices, "emulator", QEMU)
    _sub(devices, "controller", type="pci", index="0", model="pcie-root")
    _root_port(devices, index=1, alias=_GAP_ALIAS, device=1)
    for slot in range(root_ports):
        _root_port(devices, index=_FIRST_PORT_INDEX + slot, alias=f"ua-rp{slot}", device=2 + slot)
    _sub(devices, "controller", type="usb", model="none")
    console = _sub(devices, "serial", type="pty")
    _sub(console, "log", file=str(Path(console_log).resolve()), append="on")
    _serial_target(console, 0)
    command = _sub(devices, "serial", type="unix")
    _sub(command, "source", mode="bind", path=str(Path(command_socket).resolve()))
    _serial_target(command, 1)
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    _sub(devices, "memballoon", model="none")
    override = _sub(domain, f"{{{QEMU_NS}}}override")
    # the gap's own bus 0x01 and 0x3f more: the firmware numbers the next port's bus FIRST_BUS
    _port_properties(override, _GAP_ALIAS, {"bus-reserve": FIRST_BUS - 2, "io-reserve": 0})
    for slot in range(root_ports):
        _port_properties(override, f"ua-rp{slot}", {"io-reserve": 0})
    return ET.tostring(domain, encoding="unicode")


class HostMachine:
    """The domain ``name`` on the libvirtd at ``uri``."""

    def __init__(self, uri: str, name: str):
        self.uri = uri
        self.name = name

    # ------------------------------------------------------------ lifecycle
    def define(self, *, console_log: Path, command_socket: Path, memory_mib: int = MEMORY_MIB,
               vcpus: int = VCPUS, root_ports: int = ROOT_PORTS) -> None:
        """Define the (persistent) domain, off; LabError if one by that name exists."""
        xml = domain_xml(self.name, console_log=console_log, command_socket=command_socket,
                         memory_mib=memory_mib, vcpus=vcpus, root_ports=root_ports)
        with self._connection() as connection:
            if _lookup(connection, self.name) is not None:
                raise LabError(f"a domain '{self.name}' is defined already on {self.uri}")
            with _failing(f"cannot define domain '{self.name}'"):
                connection.defineXML(xml)

    def undefine(self) -> None:
        """Power off and forget the domain with everything libvirt keeps of it; nothing to do if it is gone."""
        with self._connection() as connection:
            domain = _lookup(connection, self.name)
            if domain is None:
                return
            with _failing(f"cannot undefine domain '{self.name}'"):
                if domain.isActive():
                    domain.destroy()
                domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                     | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                     | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)

    def exists(self) -> bool:
        with self._connection() as connection:
            return _lookup(connection, self.name) is not None

    def start(self) -> None:
        """Power on (nothing to do if on); returns once QEMU runs. LabError with libvirt's reason if it
        cannot start (the machine is off then)."""
        with self._domain() as domain:
            if not domain.isActive():
                with _failing(f"cannot start domain '{self.name}'"):
                    domain.create()

    def destroy(self) -> None:
        """Hard power off (nothing to do if off); returns once QEMU has exited."""
        with self._domain() as domain:
            if domain.isActive():
                try:
                    domain.destroy()
                except libvirt.libvirtError as exc:
                    if domain.isActive():  # not merely gone by itself meanwhile
                        raise LabError(f"cannot power off domain '{self.name}': {exc.get_error_message()}") from exc

    def shutdown(self) -> None:
        """Press the ACPI power button (the guest decides); nothing to do if off."""
        with self._domain() as domain:
            if domain.isActive():
                with _failing(f"cannot shut down domain '{self.name}'"):
                    domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def reset(self) -> None:
        """Press the reset button; LabError if the machine is off."""
        with self._domain() as domain:
            if not domain.isActive():
                raise LabError(f"domain '{self.name}' is off: power it on instead of resetting it")
            with _failing(f"cannot reset domain '{self.name}'"):
                domain.reset(0)

    def state(self) -> str:
        """"on" (QEMU runs, also paused) or "off"."""
        with self._domain() as domain:
            return _ON if domain.isActive() else _OFF

    def wait_state(self, wanted: str, timeout: float) -> None:
        """Wait until the machine is ``wanted`` ("on"/"off"); LabError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.state() != wanted:
            if time.monotonic() > deadline:
                raise LabError(f"domain '{self.name}' is not {wanted} after {timeout:g} s")
            time.sleep(0.05)

    def info(self) -> MachineInfo:
        with self._domain() as domain:
            with _failing(f"cannot read domain '{self.name}'"):
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

    def unplug(self, alias: str, *, timeout: float = UNPLUG_TIMEOUT) -> None:
        """Remove the device; with the machine on, return only once it is gone from the running machine
        (LabError after ``timeout`` s: the guest did not release it; it is gone from the definition anyway)."""
        user_alias = _user_alias(alias)
        with self._domain() as domain:
            live = domain.isActive() and _has_alias(domain, user_alias, 0)
            config = _has_alias(domain, user_alias, libvirt.VIR_DOMAIN_XML_INACTIVE)
            if not (live or config):
                raise LabError(f"domain '{self.name}' has no device '{alias}'", field="alias")
            flags = ((libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
                     | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0))
            with _failing(f"cannot unplug '{alias}' from domain '{self.name}'"):
                domain.detachDeviceAlias(user_alias, flags)
            deadline = time.monotonic() + timeout
            while live and domain.isActive() and _has_alias(domain, user_alias, 0):
                if time.monotonic() > deadline:
                    raise LabError(f"device '{alias}' of domain '{self.name}' is still present {timeout:g} s after "
                                   "its unplug: the guest did not release it")
                time.sleep(0.02)

    def devices(self) -> list[Device]:
        """The devices in the slots, by slot: of the running machine when it is on, else of its definition."""
        with self._domain() as domain:
            return _devices(_xml(domain, _view(domain)))

    # ----------------------------------------------------------- internals
    def _plug(self, element: ET.Element, slot: int, alias: str) -> Device:
        user_alias = _user_alias(alias)
        _sub(element, "alias", name=user_alias)
        _sub(element, "address", type="pci", domain="0x0000", bus=f"{_FIRST_PORT_INDEX + slot:#04x}",
             slot="0x00", function="0x0")
        with self._domain() as domain:
            active = domain.isActive()
            current = _xml(domain, _view(domain))
            ports = _root_ports(current)
            if slot not in ports:
                raise LabError(f"domain '{self.name}' has slots 0 to {len(ports) - 1}, no slot {slot}", field="slot")
            taken = {device.slot: device.alias for device in _devices(current)}
            if slot in taken:
                raise LabError(f"slot {slot} of domain '{self.name}' holds '{taken[slot]}' already", field="slot")
            if any(_has_alias(domain, user_alias, flags) for flags in {_view(domain), libvirt.VIR_DOMAIN_XML_INACTIVE}):
                raise LabError(f"domain '{self.name}' has a device '{alias}' already", field="alias")
            definition = _xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE)
            what = f"cannot plug '{alias}' into slot {slot} of domain '{self.name}'"
            with _failing(what):
                domain.connect().defineXML(_with_device(definition, element))
            if active:
                try:
                    with _failing(what):
                        domain.attachDeviceFlags(_live_element(current, element), libvirt.VIR_DOMAIN_AFFECT_LIVE)
                except LabError:
                    with _failing(f"cannot undo the plug of '{alias}' into the definition of '{self.name}'"):
                        domain.connect().defineXML(ET.tostring(definition, encoding="unicode"))
                    raise
            return next(device for device in _devices(_xml(domain, _view(domain))) if device.alias == alias)

    @contextmanager
    def _connection(self) -> Iterator[libvirt.virConnect]:
        with _failing(f"cannot connect to libvirt at {self.uri}"):
            connection = connect(self.uri)
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _domain(self) -> Iterator[libvirt.virDomain]:
        with self._connection() as connection:
            domain = _lookup(connection, self.name)
            if domain is None:
                raise LabError(f"no domain '{self.name}' on {self.uri}")
            yield domain


# ----------------------------------------------------------------- helpers
@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Turn a libvirt error into a LabError saying ``what`` failed and libvirt's reason."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise LabError(f"{what}: {exc.get_error_message() or exc}") from exc


def _lookup(connection: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return connection.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise LabError(f"cannot look up domain '{name}': {exc.get_error_message()}") from exc


def _view(domain: libvirt.virDomain) -> int:
    """XMLDesc flags of what the machine has now: the running machine's, else its definition's."""
    return 0 if domain.isActive() else libvirt.VIR_DOMAIN_XML_INACTIVE


def _xml(domain: libvirt.virDomain, flags: int) -> ET.Element:
    with _failing("cannot read a domain's XML"):
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


def _has_alias(domain: libvirt.virDomain, user_alias: str, flags: int) -> bool:
    return _xml(domain, flags).find(f"devices/*/alias[@name='{user_alias}']") is not None


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
        common = {"alias": alias.get("name")[len(ALIAS_PREFIX):], "slot": slot, "bdf": guest_bdf(slot)}
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


def _user_alias(alias: str) -> str:
    if not _ID.match(alias):
        raise LabError(f"a device id is 1 to 60 letters, digits, '-' or '_', not {alias!r}", field="alias")
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


def _root_port(devices: ET.Element, *, index: int, alias: str, device: int) -> None:
    controller = _sub(devices, "controller", type="pci", index=str(index), model="pcie-root-port")
    _sub(controller, "model", name="pcie-root-port")
    _sub(controller, "target", chassis=str(index), port=f"{0x10 + index:#x}")
    _sub(controller, "alias", name=alias)
    _sub(controller, "address", type="pci", domain="0x0000", bus="0x00", slot=f"{device:#04x}", function="0x0")


def _serial_target(serial: ET.Element, port: int) -> None:
    target = _sub(serial, "target", type="isa-serial", port=str(port))
    _sub(target, "model", name="isa-serial")


def _port_properties(override: ET.Element, alias: str, properties: dict[str, int]) -> None:
    device = _sub(override, f"{{{QEMU_NS}}}device", alias=alias)
    frontend = _sub(device, f"{{{QEMU_NS}}}frontend")
    for name, value in properties.items():
        _sub(frontend, f"{{{QEMU_NS}}}property", name=name, type="unsigned", value=str(value))
