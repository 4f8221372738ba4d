"""A VM's libvirt domain XML, built from one fragment per concern and assembled in one of two forms.

    spec = DomainSpec(name="instance-1", uuid=..., vcpus=2, memory_mib=1024, placement=placement,
                      functions=[PassedFunction("port-1", "0000:41:00.0", "net", slot=0, mac="fa:16:3e:00:00:01"),
                                 PassedFunction("vol-1", "0000:42:00.0", "storage", slot=1, boot_order=1)])
    assemble(spec, "production")                 # every function a PCI hostdev, passed through by its BDF
    assemble(spec, "lab", LabBacking(tap=..., socket=...))   # what stands for each function in the lab

Fragments (pure functions of the spec, :mod:`xml.etree` elements): :func:`vcpu`, :func:`cpu` (with the
guest's NUMA cells), :func:`cputune` (pinning), :func:`numatune`, :func:`memory_backing` (huge pages),
:func:`hostdev` (one per DPU function or PCI device), :func:`vf_interface` (a NIC's VF), :func:`lab_device`,
:func:`lab_stand_in`, :func:`root_ports`,
:func:`serial_console`, :func:`command_channel` and :func:`guest_agent`.

The guest's PCI layout is explicit, never libvirt's choice: guest slot N is PCIe root port N
(controller index N+1, at device N+1 of the root complex ``pcie.0``, user alias ``ua-rp<N>`` as in
:mod:`dpustack.libvirt_host`), and what sits in slot N is device 0 of that port's bus. Empty ports are
where hot-plugged NICs and disks go. The guest agent's virtio-serial controller is at ``pcie.0`` device
:data:`VIRTIO_SERIAL_DEVICE`. Device aliases are ``ua-<id>``, so devices can be unplugged by id.

The two forms differ only where :data:`FORMS` and :func:`function_element` say:

* ``production``: a KVM domain with the host's CPU; each DPU function (by the BDF its snic API
  returned) and each PCI device is a ``<hostdev mode='subsystem' type='pci' managed='yes'>``; a device
  that carries a port's MAC (the VF of a remote-managed NIC) is an ``<interface type='hostdev'>`` of its
  BDF, which sets that MAC on the VF (as Nova does for such ports: no VLAN).
* ``lab``: a TCG domain (the lab has no real PCI devices to pass): a net function is a virtio-net
  ``<interface type='ethernet'>`` on the function's tap with its port's MAC, a storage function a
  vhost-user-blk ``<disk type='vhostuser'>`` on its storage export's socket (:func:`lab_device`), each
  at the guest address its hostdev would have; memory is shared memfd, which vhost-user back ends map.
  A PCI device is a virtio RNG at the guest address its hostdev would have (:func:`lab_stand_in`): the
  guest sees a PCI device in that slot, not the host's. A lab domain may also get the lab's command
  channel on ttyS1 (:func:`command_channel`).

Bad input is an InvalidInput naming the field (``functions[1].slot``, ``placement``...).
"""

from __future__ import annotations

import re
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dpustack.contract.numa import NumaPlacement
from dpustack.drivers.functions import FunctionKind
from dpustack.errors import InvalidInput
from dpustack.inputs import unicast_mac
from dpustack.pci.address import parse_address

FormName = Literal["production", "lab"]
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
ROOT_PORTS = 16
VIRTIO_SERIAL_DEVICE = 0x1E  # pcie.0 device of the guest agent's virtio-serial controller
MAX_ROOT_PORTS = VIRTIO_SERIAL_DEVICE - 1  # root ports at pcie.0 devices 01-1d; 1f is the chipset's
ALIAS_PREFIX = "ua-"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PassedFunction:
    """A DPU function given to the guest: its BDF on the host as the snic API returned it, in guest ``slot``."""

    id: str  # device alias ua-<id>
    host_bdf: str
    kind: FunctionKind
    slot: int
    mac: str | None = None  # net: the port's MAC
    boot_order: int | None = None  # storage (or a net function to boot from): lowest first


@dataclass(frozen=True)
class PassedDevice:
    """A PCI-flavor or accelerator device of the host, passed through by its BDF into guest ``slot``; with
    ``mac``, the VF of a remote-managed NIC, which the guest sees with its port's MAC."""

    id: str
    host_bdf: str
    slot: int
    mac: str | None = None


@dataclass(frozen=True)
class SerialConsole:
    """ttyS0: a pty (what ``virDomainOpenConsole`` attaches to) or a unix socket libvirt listens on; either
    optionally logged to ``log``."""

    type: Literal["pty", "unix"] = "pty"
    socket: str | None = None
    log: str | None = None


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML is made of (machine type q35, always)."""

    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    placement: NumaPlacement | None = None  # None: no NUMA cells, no pinning, small pages
    functions: list[PassedFunction] = field(default_factory=list)
    devices: list[PassedDevice] = field(default_factory=list)
    console: SerialConsole = field(default_factory=SerialConsole)
    guest_agent_socket: str | None = None  # None: libvirt picks the path
    root_ports: int = ROOT_PORTS


@dataclass(frozen=True)
class LabBacking:
    """What stands for a function in the lab: the tap of a net function, the vhost-user-blk socket of a
    storage function's export; and, by the domain's UUID, the unix socket of the lab's command channel
    into the guest (ttyS1, as the lab's host machines have; None: no such channel)."""

    tap: Callable[[PassedFunction], str]
    socket: Callable[[PassedFunction], str | Path]
    command_socket: Callable[[str], str | Path] | None = None


@dataclass(frozen=True)
class Form:
    """What one form decides; all else is common XML."""

    domain_type: str
    cpu_mode: str | None  # None: libvirt's default CPU for the domain type
    shared_memory: bool  # memfd memory, shared: vhost-user back ends map it
    passes_devices: bool  # PCI devices as hostdevs (else the lab's stand-in, lab_stand_in)


FORMS: dict[str, Form] = {
    "production": Form(domain_type="kvm", cpu_mode="host-passthrough", shared_memory=False, passes_devices=True),
    "lab": Form(domain_type="qemu", cpu_mode=None, shared_memory=True, passes_devices=False),
}


def lab_device(function: PassedFunction, lab: LabBacking) -> ET.Element:
    """The lab form of a function, the one place it differs: what stands for it at its guest address."""
    if function.kind == "net":
        element = _sub(None, "interface", type="ethernet")
        _sub(element, "mac", address=unicast_mac(function.mac or ""))
        _sub(element, "target", dev=lab.tap(function), managed="no")
        _sub(element, "model", type="virtio")
    else:
        element = _sub(None, "disk", type="vhostuser", device="disk")
        _sub(element, "driver", name="qemu", type="raw")
        source = _sub(element, "source", type="unix", path=str(lab.socket(function)))
        _sub(source, "reconnect", enabled="yes", timeout="5")
        _sub(element, "target", dev=disk_target(function.slot), bus="virtio")
    if function.boot_order is not None:
        _sub(element, "boot", order=str(function.boot_order))
    return _placed(element, function)


#: what stands for a PCI device in a lab VM: a virtio RNG (1af4:1044) fed from the host's /dev/urandom
LAB_STAND_IN_MODEL = "virtio"


def lab_stand_in(device: PassedDevice) -> ET.Element:
    """The lab form of a PCI device: a virtio RNG in the device's guest slot, so the guest finds a PCI device
    at the address the device would have (a lab host has no device of its own to give)."""
    element = _sub(None, "rng", model=LAB_STAND_IN_MODEL)
    _sub(element, "backend", "/dev/urandom", model="random")
    return _placed(element, device)


def device_element(device: PassedDevice, form: FormName) -> ET.Element:
    """A PCI device in the given form: its hostdev (its VF interface, with a MAC), or the lab's stand-in."""
    if not _form(form).passes_devices:
        return lab_stand_in(device)
    return vf_interface(device) if device.mac is not None else hostdev(device)


def function_element(function: PassedFunction, form: FormName, lab: LabBacking | None) -> ET.Element:
    """A function in the given form."""
    if form == "production":
        return hostdev(function)
    if lab is None:
        raise InvalidInput("the lab form needs a LabBacking (taps and sockets of the functions)", field="lab")
    return lab_device(function, lab)


# ----------------------------------------------------------------- checks
def check(spec: DomainSpec, form: FormName = "production") -> None:
    """Refuse a spec libvirt would refuse or misplace, naming the field."""
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise InvalidInput(f"name: {spec.name!r} is not 1-64 letters, digits, '.', '_' or '-'", field="name")
    try:
        uuid_module.UUID(str(spec.uuid))
    except ValueError:
        raise InvalidInput(f"uuid: {spec.uuid!r} is not a UUID", field="uuid") from None
    for name, value, low, high in (("vcpus", spec.vcpus, 1, 4096), ("memory_mib", spec.memory_mib, 1, 1 << 32),
                                   ("root_ports", spec.root_ports, 1, MAX_ROOT_PORTS)):
        if not low <= value <= high:
            raise InvalidInput(f"{name}: {low} to {high}, not {value}", field=name)
    if spec.placement is not None:
        _check_placement(spec, spec.placement)
    _form(form)
    if spec.console.type not in ("pty", "unix") or (spec.console.type == "unix") != bool(spec.console.socket):
        raise InvalidInput(f"console: a pty, or a unix socket with its path, not {spec.console}", field="console")
    taken: dict[str, dict[object, str]] = {"id": {}, "slot": {}, "host_bdf": {}, "boot_order": {}}
    for where, item in _passed(spec):
        if not isinstance(item.id, str) or not _ID.match(item.id):
            raise InvalidInput(f"{where}.id: {item.id!r} is not 1-60 letters, digits, '-' or '_'", field=f"{where}.id")
        if not 0 <= item.slot < spec.root_ports:
            raise InvalidInput(f"{where}.slot: the domain has slots 0 to {spec.root_ports - 1}, not {item.slot}",
                               field=f"{where}.slot")
        keys = {"id": item.id, "slot": item.slot, "host_bdf": parse_address(item.host_bdf, field=f"{where}.host_bdf")}
        if isinstance(item, PassedFunction):
            _check_function(item, where)
            keys["boot_order"] = item.boot_order
        elif item.mac is not None:
            _check_mac(item.mac, where)
        for what, key in keys.items():
            if key is not None and key in taken[what]:
                raise InvalidInput(f"{where}.{what}: '{taken[what][key]}' has {what} {key} already",
                                   field=f"{where}.{what}")
            taken[what][key] = item.id


def _check_placement(spec: DomainSpec, placement: NumaPlacement) -> None:
    for name, cells, domain in (("vcpus", placement.vcpus, spec.vcpus),
                                ("memory_mib", placement.memory_mib, spec.memory_mib)):
        if cells != domain:
            raise InvalidInput(f"placement: its cells hold {name}={cells}, the domain has {name}={domain}",
                               field="placement")
    guest_cells = sorted(cell.guest_cell for cell in placement.cells)
    if guest_cells != list(range(len(guest_cells))):
        raise InvalidInput(f"placement.cells: guest cells must be 0..{len(guest_cells) - 1}, not {guest_cells}",
                           field="placement.cells")
    page = placement.page_size_kib
    if page is not None and (page < 4 or page & (page - 1)):
        raise InvalidInput(f"placement.page_size_kib: {page} KiB is not a page size", field="placement.page_size_kib")
    for cell in placement.cells if page is not None else ():
        if cell.memory_mib * 1024 % page:
            raise InvalidInput(f"placement.cells: guest cell {cell.guest_cell}'s {cell.memory_mib} MiB is not a "
                               f"whole number of {page} KiB pages", field="placement.cells")


def _check_function(function: PassedFunction, where: str) -> None:
    if function.kind not in ("net", "storage"):
        raise InvalidInput(f"{where}.kind: 'net' or 'storage', not {function.kind!r}", field=f"{where}.kind")
    if function.kind == "net" or function.mac is not None:
        _check_mac(function.mac or "", where)
    if function.boot_order is not None and function.boot_order < 1:
        raise InvalidInput(f"{where}.boot_order: 1 or more, not {function.boot_order}", field=f"{where}.boot_order")


def _check_mac(mac: str, where: str) -> None:
    try:
        unicast_mac(mac)
    except ValueError as exc:
        raise InvalidInput(f"{where}.mac: {exc}", field=f"{where}.mac") from None


def _form(form: str) -> Form:
    if form not in FORMS:
        raise InvalidInput(f"form: one of {', '.join(FORMS)}, not {form!r}", field="form")
    return FORMS[form]


def _passed(spec: DomainSpec) -> Iterable[tuple[str, PassedFunction | PassedDevice]]:
    yield from ((f"functions[{i}]", item) for i, item in enumerate(spec.functions))
    yield from ((f"devices[{i}]", item) for i, item in enumerate(spec.devices))


# -------------------------------------------------------------- fragments
def vcpu(spec: DomainSpec) -> ET.Element:
    """``<vcpu>``; shared CPUs (no pinning) float over the cells' host CPUs (``cpuset``)."""
    element = _sub(None, "vcpu", str(spec.vcpus), placement="static")
    if spec.placement is not None and not spec.placement.pinned:
        element.set("cpuset", cpuset(cpu for cell in spec.placement.cells for cpu in cell.host_cpus))
    return element


def cpu(spec: DomainSpec, form: FormName) -> ET.Element | None:
    """``<cpu>`` of the form's CPU mode, with one ``<numa><cell>`` per guest cell: its vCPUs and memory (and
    ``memAccess='shared'`` on huge pages, so a vhost-user back end can map them). None: nothing to say."""
    mode = _form(form).cpu_mode
    if mode is None and spec.placement is None:
        return None
    element = _sub(None, "cpu", **({"mode": mode, "check": "none"} if mode else {}))
    if spec.placement is not None:
        numa = _sub(element, "numa")
        for cell in sorted(spec.placement.cells, key=lambda c: c.guest_cell):
            shared = {"memAccess": "shared"} if spec.placement.page_size_kib is not None else {}
            _sub(numa, "cell", id=str(cell.guest_cell), cpus=cpuset(cell.vcpus), memory=str(cell.memory_mib),
                 unit="MiB", **shared)
    return element


def cputune(spec: DomainSpec) -> ET.Element | None:
    """Pinned: each vCPU on its own host CPU; shared over several cells: each vCPU over its cell's CPUs.
    The emulator threads run on the cells' CPUs. None without a placement."""
    placement = spec.placement
    if placement is None:
        return None
    element = _sub(None, "cputune")
    if placement.pinned or len(placement.cells) > 1:
        pins = {}
        for cell in placement.cells:
            for i, guest in enumerate(cell.vcpus):
                pins[guest] = str(cell.host_cpus[i]) if placement.pinned else cpuset(cell.host_cpus)
        for guest in sorted(pins):
            _sub(element, "vcpupin", vcpu=str(guest), cpuset=pins[guest])
    _sub(element, "emulatorpin", cpuset=cpuset(cpu for cell in placement.cells for cpu in cell.host_cpus))
    return element


def numatune(spec: DomainSpec) -> ET.Element | None:
    """Memory strictly from the placement's host cells, each guest cell's from its own."""
    if spec.placement is None:
        return None
    element = _sub(None, "numatune")
    _sub(element, "memory", mode="strict", nodeset=cpuset(cell.host_cell for cell in spec.placement.cells))
    for cell in sorted(spec.placement.cells, key=lambda c: c.guest_cell):
        _sub(element, "memnode", cellid=str(cell.guest_cell), mode="strict", nodeset=str(cell.host_cell))
    return element


def memory_backing(spec: DomainSpec, form: FormName) -> ET.Element | None:
    """Huge pages of the placement's size for each guest cell; shared memfd memory if the form says so."""
    page = spec.placement.page_size_kib if spec.placement is not None else None
    shared = _form(form).shared_memory
    if page is None and not shared:
        return None
    element = _sub(None, "memoryBacking")
    if page is not None:
        pages = _sub(element, "hugepages")
        for cell in sorted(spec.placement.cells, key=lambda c: c.guest_cell):
            _sub(pages, "page", size=str(page), unit="KiB", nodeset=str(cell.guest_cell))
    if shared:
        _sub(element, "source", type="memfd")
        _sub(element, "access", mode="shared")
    return element


def hostdev(item: PassedFunction | PassedDevice) -> ET.Element:
    """The production form of a function or device: a VFIO hostdev of its host BDF, in its guest slot."""
    element = _sub(None, "hostdev", mode="subsystem", type="pci", managed="yes")
    _sub(element, "driver", name="vfio")
    _host_source(element, item.host_bdf)
    if isinstance(item, PassedFunction) and item.boot_order is not None:
        _sub(element, "boot", order=str(item.boot_order))
    return _placed(element, item)


def vf_interface(device: PassedDevice) -> ET.Element:
    """The production form of a remote-managed NIC's VF: ``<interface type='hostdev'>`` of its host BDF,
    which gives the VF the port's MAC before the guest sees it (and programs no VLAN), in its guest slot."""
    element = _sub(None, "interface", type="hostdev", managed="yes")
    _sub(element, "mac", address=unicast_mac(device.mac or ""))
    _sub(element, "driver", name="vfio")
    _host_source(element, device.host_bdf, typed=True)
    return _placed(element, device)


def _host_source(element: ET.Element, host_bdf: str, *, typed: bool = False) -> None:
    """``<source><address>`` of a host BDF (an interface's address says its type, a hostdev's does not)."""
    address = parse_address(host_bdf, field="host_bdf")
    _sub(_sub(element, "source"), "address", **({"type": "pci"} if typed else {}), domain=f"{address.domain:#06x}",
         bus=f"{address.bus:#04x}", slot=f"{address.slot:#04x}", function=f"{address.function:#x}")


def root_ports(spec: DomainSpec) -> list[ET.Element]:
    """``pcie-root`` and one ``pcie-root-port`` per guest slot (see the module's docstring)."""
    elements = [_sub(None, "controller", type="pci", index="0", model="pcie-root")]
    for slot in range(spec.root_ports):
        index = slot + 1
        port = _sub(None, "controller", type="pci", index=str(index), model="pcie-root-port")
        _sub(port, "model", name="pcie-root-port")
        _sub(port, "target", chassis=str(index), port=f"{0x10 + slot:#x}")
        _sub(port, "alias", name=port_alias(slot))
        _sub(port, "address", type="pci", domain="0x0000", bus="0x00", slot=f"{index:#04x}", function="0x0")
        elements.append(port)
    return elements


def serial_console(console: SerialConsole) -> list[ET.Element]:
    """ttyS0 (a pty or a unix socket libvirt listens on, optionally logged) and the console on it."""
    elements = []
    for tag in ("serial", "console"):
        element = _sub(None, tag, type=console.type)
        if console.type == "unix":
            _sub(element, "source", mode="bind", path=str(console.socket))
        if tag == "serial":
            if console.log:
                _sub(element, "log", file=str(console.log), append="on")
            _sub(_sub(element, "target", type="isa-serial", port="0"), "model", name="isa-serial")
        else:
            _sub(element, "target", type="serial", port="0")
        elements.append(element)
    return elements


def command_channel(path: str | Path) -> ET.Element:
    """ttyS1 on a unix socket libvirt listens on: the lab's command channel (the host image's agent)."""
    element = _sub(None, "serial", type="unix")
    _sub(element, "source", mode="bind", path=str(path))
    _sub(_sub(element, "target", type="isa-serial", port="1"), "model", name="isa-serial")
    return element


def guest_agent(spec: DomainSpec) -> list[ET.Element]:
    """The virtio-serial controller and the QEMU guest agent's channel on it."""
    controller = _sub(None, "controller", type="virtio-serial", index="0")
    _sub(controller, "address", type="pci", domain="0x0000", bus="0x00", slot=f"{VIRTIO_SERIAL_DEVICE:#04x}",
         function="0x0")
    channel = _sub(None, "channel", type="unix")
    source = _sub(channel, "source", mode="bind")
    if spec.guest_agent_socket:
        source.set("path", str(spec.guest_agent_socket))
    _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    _sub(channel, "address", type="virtio-serial", controller="0", bus="0", port="1")
    return [controller, channel]


def assemble(spec: DomainSpec, form: FormName, lab: LabBacking | None = None) -> str:
    """The whole domain XML of ``spec`` in ``form`` (``lab`` needs ``lab``)."""
    check(spec, form)
    domain = _sub(None, "domain", type=_form(form).domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", str(uuid_module.UUID(str(spec.uuid))))
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    parts = [memory_backing(spec, form), vcpu(spec), cputune(spec), numatune(spec)]
    domain.extend([part for part in parts if part is not None])
    _sub(_sub(domain, "os"), "type", "hvm", arch="x86_64", machine="q35")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    cpu_element = cpu(spec, form)
    if cpu_element is not None:
        domain.append(cpu_element)
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        _sub(domain, event, action)
    devices = _sub(domain, "devices")
    devices.extend(root_ports(spec))
    _sub(devices, "controller", type="usb", model="none")
    devices.extend([function_element(function, form, lab) for function in spec.functions])
    devices.extend([device_element(device, form) for device in spec.devices])
    devices.extend(serial_console(spec.console))
    if form == "lab" and lab is not None and lab.command_socket is not None:
        devices.append(command_channel(lab.command_socket(spec.uuid)))
    devices.extend(guest_agent(spec))
    _sub(devices, "memballoon", model="none")
    return to_string(domain)


def to_string(element: ET.Element) -> str:
    """An element (the domain, or one device to attach) as XML text."""
    return ET.tostring(element, encoding="unicode")


# ----------------------------------------------------------------- helpers
def port_alias(slot: int) -> str:
    """The user alias of guest slot ``slot``'s root port (the same as :func:`dpustack.libvirt_host.port_alias`)."""
    return f"{ALIAS_PREFIX}rp{slot}"


def guest_address(slot: int) -> ET.Element:
    """Device 0 on the bus of guest slot ``slot``'s root port."""
    return _sub(None, "address", type="pci", domain="0x0000", bus=f"{slot + 1:#04x}", slot="0x00", function="0x0")


def slot_at(address: tuple[int, int, int, int]) -> int | None:
    """The guest slot whose device sits at guest PCI ``address`` (:func:`guest_address`'s inverse); None if
    the address is in no slot."""
    domain, bus, slot, function = address
    return bus - 1 if (domain, slot, function) == (0, 0, 0) and 1 <= bus <= MAX_ROOT_PORTS else None


def disk_target(slot: int) -> str:
    """vda for slot 0 ... vdz, vdaa...: unique because the slot is."""
    letters, number = "", slot + 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return "vd" + letters


def cpuset(ids: Iterable[int]) -> str:
    """libvirt's cpuset syntax: ``0-3,8,10-11``."""
    ranges: list[list[int]] = []
    for number in sorted(set(ids)):
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _placed(element: ET.Element, item: PassedFunction | PassedDevice) -> ET.Element:
    _sub(element, "alias", name=ALIAS_PREFIX + item.id)
    element.append(guest_address(item.slot))
    return element


def _sub(parent: ET.Element | None, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    """A new element ``tag``, the last child of ``parent`` if one is given."""
    element = ET.Element(tag, attributes) if parent is None else ET.SubElement(parent, tag, attributes)
    element.text = text
    return element
