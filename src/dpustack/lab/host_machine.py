"""The lab's bare-metal host machine: the libvirt domain (QEMU, TCG) its private libvirtd runs.

    machine = define_host(daemon.uri, "host-bm-1", console_log=Path("bm-1/console.log"),
                          command_socket=Path("bm-1/ttyS1.sock"))     # a HostMachine, off, no devices

The machine: q35 with ACPI, 1 vCPU and 256 MiB (shared memfd memory, which
vhost-user back ends need to map it), no graphics, no NIC of its own, no USB,
no balloon; ``ttyS0`` a pty (what ``virDomainOpenConsole`` attaches to)
logged to ``console_log``; ``ttyS1`` a unix socket the machine listens on at
``command_socket`` (the lab's command channel into the guest). It boots from
the disk with the lowest ``boot_order``; power-off destroys it, a reboot
restarts it.

The slots: ``root_ports`` PCIe root ports (16 by default, at most
:data:`MAX_ROOT_PORTS`); a device in slot N sits alone on root port N, where
the guest sees it at ``0000:{0x41+N:02x}:00.0``. The root ports sit on the
root complex (``pcie.0``, devices 02.0, 03.0…) behind one empty port at 01.0
that reserves buses 0x01–0x40 (QEMU's ``bus-reserve``, set through libvirt's
``<qemu:override>``), so the firmware numbers port N's bus 0x41+N. Root ports
there get QEMU 7.2's ACPI hot-plug on q35: an unplug is over in about 0.15 s.
(Behind a ``pxb-pcie`` expander with bus number 64 the BDFs are the same but
only native PCIe hot-plug works, and Linux's pciehp takes about 6.4 s per
unplug: its 5 s attention-button delay.) Controllers and device addresses
are all explicit, so the layout never depends on libvirt's address
assignment. Power and hot-plug: :class:`dpustack.libvirt_host.HostMachine`.
Paths in the domain are seen by the daemon: they must not be under the
directories its mount namespace hides (see :mod:`dpustack.lab.libvirt_daemon`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from dpustack.drivers.functions import FIRST_BUS
from dpustack.lab.state import LabError
from dpustack.libvirt_host import HostMachine, port_alias

QEMU = "/usr/bin/qemu-system-x86_64"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ROOT_PORTS = 16
MAX_ROOT_PORTS = 29  # root complex devices 02.0–1e.0 (1f.x is the chipset's)
MEMORY_MIB = 256
VCPUS = 1
_GAP_ALIAS = "ua-bus-gap"
_FIRST_PORT_INDEX = 2  # controller index of root port 0: 0 is pcie.0, 1 the gap

ET.register_namespace("qemu", QEMU_NS)


def define_host(uri: str, name: str, *, console_log: Path, command_socket: Path, memory_mib: int = MEMORY_MIB,
                vcpus: int = VCPUS, root_ports: int = ROOT_PORTS) -> HostMachine:
    """Define the host's (persistent) domain, off and with empty slots; DriverError if one by that name exists."""
    machine = HostMachine(uri, name)
    machine.define(domain_xml(name, console_log=console_log, command_socket=command_socket,
                              memory_mib=memory_mib, vcpus=vcpus, root_ports=root_ports))
    return machine


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
        _root_port(devices, index=_FIRST_PORT_INDEX + slot, alias=port_alias(slot), device=2 + slot)
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
    # the gap's own bus 0x01 and 0x3f more, up to FIRST_BUS: the firmware numbers root port 0's bus 0x41
    _port_properties(override, _GAP_ALIAS, {"bus-reserve": FIRST_BUS - 1, "io-reserve": 0})
    for slot in range(root_ports):
        _port_properties(override, port_alias(slot), {"io-reserve": 0})
    return ET.tostring(domain, encoding="unicode")


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


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element
