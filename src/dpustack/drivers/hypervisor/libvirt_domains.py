"""The domain lifecycle of :class:`~dpustack.drivers.hypervisor.libvirt.LibvirtHypervisorDriver`, by UUID.

Each operation opens a connection of its own (:meth:`LibvirtDomains._connection`), looks the domain up by
its UUID and does one thing; libvirt's refusals come as DriverError with libvirt's reason. What
:mod:`dpustack.libvirt_host` does for the lab's host machines is done by its helpers here too: destroying
(:func:`~dpustack.libvirt_host.power_off`), undefining with everything libvirt keeps
(:func:`~dpustack.libvirt_host.forget`) and unplugging until the guest let go
(:func:`~dpustack.libvirt_host.unplug`).

libvirt's states map to :class:`DomainState` as :data:`STATES` says; a soft reboot is libvirt's ACPI
reboot (the power button, then QEMU is reset instead of ended when the guest powers off). A password is set
by ``virDomainSetUserPassword``, which libvirt sends to the guest's QEMU guest agent, its answer awaited
:data:`~dpustack.drivers.hypervisor.GUEST_AGENT_TIMEOUT` seconds (``virDomainAgentSetResponseTimeout``).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import libvirt

from dpustack.drivers.bmc import SerialConsole
from dpustack.drivers.bmc.libvirt_console import DomainConsole
from dpustack.drivers.hypervisor import (DETACH_TIMEOUT, GUEST_AGENT_TIMEOUT, SHUTDOWN_RETRY, STOP_TIMEOUT,
                                        DomainState)
from dpustack.drivers.hypervisor.definition import (addresses, aliases, defined_digest, definition, device,
                                                    domain_uuid, same_device)
from dpustack.errors import DriverError
from dpustack.libvirt_host import failing, forget, lookup, opened, power_off, unplug

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.RUNNING,  # active, state not known yet
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,  # being shut down
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,  # the guest suspended itself (S3)
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.OFF,
}
POLL = 0.05


class LibvirtDomains:
    """The domains of the libvirtd at ``uri``, by UUID (mixed into the libvirt hypervisor driver)."""

    uri: str

    def define(self, uuid: str, xml: str) -> None:
        wanted = definition(uuid, xml)
        with self._connection() as connection:
            domain = lookup(connection, wanted.uuid, by_uuid=True)
            if domain is None:
                with failing(f"cannot define domain {wanted.uuid} ('{wanted.name}')"):
                    connection.defineXML(wanted.xml)
                return
            if defined_digest(_xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE)) != wanted.digest:
                raise DriverError(f"domain {wanted.uuid} is defined already ('{domain.name()}'), from other XML: "
                                  "undefine it first", field="uuid")

    def redefine(self, uuid: str, xml: str) -> None:
        """libvirt's defineXML of a defined domain replaces its persistent definition, its NVRAM kept."""
        wanted = definition(uuid, xml)
        with self._domain(uuid) as (domain, label):
            digest = defined_digest(_xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE))
            if digest == wanted.digest:
                return
            if digest is None:
                raise DriverError(f"{label} was not defined by dpustack: it is not defined again", field="uuid")
            if (state := _state(domain)) != DomainState.OFF:
                raise DriverError(f"{label} is {state}: stop it to define it again")
            if domain.name() != wanted.name:
                raise DriverError(f"{label} is not '{wanted.name}'", field="xml")
            with failing(f"cannot define {label} again"):
                domain.connect().defineXML(wanted.xml)

    def start(self, uuid: str) -> None:
        with self._domain(uuid) as (domain, label):
            if _state(domain) == DomainState.OFF:
                with failing(f"cannot start {label}"):
                    domain.create()

    def stop(self, uuid: str, soft: bool = True, timeout: float = STOP_TIMEOUT) -> None:
        with self._domain(uuid) as (domain, label):
            if not soft:
                power_off(domain, label)
                return
            state = _state(domain)
            if state == DomainState.PAUSED:
                raise DriverError(f"{label} is paused and cannot hear the power button: unpause it or stop it hard")
            deadline, pressed = time.monotonic() + timeout, None
            while state not in (DomainState.OFF, DomainState.MISSING):
                now = time.monotonic()
                if now > deadline:
                    raise DriverError(f"{label} did not power off within {timeout:g} s of the power button")
                if pressed is None or now - pressed >= SHUTDOWN_RETRY:
                    with failing(f"cannot shut down {label}"):
                        domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                    pressed = now
                time.sleep(POLL)
                state = _state(domain)

    def reboot(self, uuid: str, soft: bool = True) -> None:
        with self._domain(uuid) as (domain, label):
            state = _state(domain)
            if soft:
                if state != DomainState.RUNNING:
                    raise DriverError(f"{label} is {state}: a soft reboot needs a running guest")
                with failing(f"cannot reboot {label}"):
                    domain.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
            elif state == DomainState.OFF:
                with failing(f"cannot start {label}"):
                    domain.create()
            else:
                with failing(f"cannot reset {label}"):
                    domain.reset(0)
                    if state == DomainState.PAUSED:
                        domain.resume()

    def pause(self, uuid: str) -> None:
        with self._domain(uuid) as (domain, label):
            state = _state(domain)
            if state == DomainState.OFF:
                raise DriverError(f"{label} is off: nothing to pause")
            if state == DomainState.RUNNING:
                with failing(f"cannot pause {label}"):
                    domain.suspend()

    def unpause(self, uuid: str) -> None:
        with self._domain(uuid) as (domain, label):
            state = _state(domain)
            if state == DomainState.OFF:
                raise DriverError(f"{label} is off: start it instead")
            if state == DomainState.PAUSED:
                with failing(f"cannot unpause {label}"):
                    domain.resume()

    def state(self, uuid: str) -> DomainState:
        wanted = domain_uuid(uuid)
        with self._connection() as connection:
            domain = lookup(connection, wanted, by_uuid=True)
            return DomainState.MISSING if domain is None else _state(domain)

    def undefine(self, uuid: str) -> None:
        wanted = domain_uuid(uuid)
        with self._connection() as connection:
            domain = lookup(connection, wanted, by_uuid=True)
            if domain is not None:
                forget(domain, f"domain {wanted}")

    def attach(self, uuid: str, device_xml: str, alias: str) -> None:
        element = device(device_xml, alias)
        with self._domain(uuid) as (domain, label):
            active, persistent = domain.isActive(), domain.isPersistent()
            views = [(libvirt.VIR_DOMAIN_AFFECT_LIVE, 0)] if active else []
            views += [(libvirt.VIR_DOMAIN_AFFECT_CONFIG, libvirt.VIR_DOMAIN_XML_INACTIVE)] if persistent else []
            flags = 0
            for affect, view in views:
                held = aliases(ET.fromstring(_xml(domain, view))).get(alias)
                if held is None:
                    flags |= affect
                elif not same_device(element, held):
                    raise DriverError(f"{label} has another device '{alias}' already", field="alias")
            if flags:
                with failing(f"cannot attach '{alias}' to {label}"):
                    domain.attachDeviceFlags(ET.tostring(element, encoding="unicode"), flags)

    def detach(self, uuid: str, alias: str, timeout: float = DETACH_TIMEOUT) -> None:
        with self._domain(uuid) as (domain, label):
            unplug(domain, alias, label, timeout=timeout, missing_ok=True)

    def device_addresses(self, uuid: str) -> dict[str, tuple[int, int, int, int]]:
        with self._domain(uuid) as (domain, _label):
            return addresses(aliases(ET.fromstring(_xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE))))

    def serial_console(self, uuid: str) -> SerialConsole:
        with self._domain(uuid) as (domain, _label):
            return DomainConsole(self.uri, domain.UUIDString())

    def set_password(self, uuid: str, user: str, password: str) -> None:
        with self._domain(uuid) as (domain, label):
            state = _state(domain)
            if state != DomainState.RUNNING:
                raise DriverError(f"{label} is {state}: setting a password needs a running guest, whose guest "
                                  "agent answers")
            with failing(f"cannot set the password of '{user}' in {label} through its guest agent"):
                # without a response timeout libvirt waits for ever on an agent that stopped answering
                domain.agentSetResponseTimeout(GUEST_AGENT_TIMEOUT, 0)
                domain.setUserPassword(user, password, 0)  # libvirt's error text never holds the password

    def domains(self) -> list[str]:
        with self._connection() as connection:
            with failing(f"cannot list the domains of the hypervisor at {self.uri}"):
                found = connection.listAllDomains(0)
            ours = []
            for domain in found:
                try:
                    xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # gone meanwhile
                    raise DriverError(f"cannot read a domain of the hypervisor at {self.uri}: "
                                      f"{exc.get_error_message()}") from exc
                if defined_digest(xml) is not None:
                    ours.append(domain.UUIDString())
        return sorted(ours)

    # ----------------------------------------------------------- internals
    def _connection(self) -> AbstractContextManager[libvirt.virConnect]:
        return opened(self.uri, f"cannot connect to the hypervisor at {self.uri}")

    @contextmanager
    def _domain(self, uuid: str) -> Iterator[tuple[libvirt.virDomain, str]]:
        """Domain ``uuid`` and how errors name it; DriverError if the host has none."""
        wanted = domain_uuid(uuid)
        with self._connection() as connection:
            domain = lookup(connection, wanted, by_uuid=True)
            if domain is None:
                raise DriverError(f"the hypervisor at {self.uri} has no domain {wanted}", field="uuid")
            yield domain, f"domain {wanted} ('{domain.name()}')"


def _state(domain: libvirt.virDomain) -> DomainState:
    """The domain's state; ``missing`` once it is gone (a transient domain that stopped)."""
    try:
        state, _reason = domain.state()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return DomainState.MISSING
        raise DriverError(f"cannot read the state of domain {domain.UUIDString()}: {exc.get_error_message()}") from exc
    return STATES.get(state, DomainState.RUNNING if domain.isActive() else DomainState.OFF)


def _xml(domain: libvirt.virDomain, flags: int) -> str:
    with failing(f"cannot read the XML of domain {domain.UUIDString()}"):
        return domain.XMLDesc(flags)
