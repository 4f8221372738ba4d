"""In-memory HypervisorDriver: a host whose cells, and the running domains whose use it reports, a test or
``[hypervisor.memory]`` sets; the domains it defines are entries of a dict with a state, the devices of their
definition and of their running guest.

The pretend guests obey at once: a soft stop powers off, a detach is released, unless the test made the
guest deaf (:attr:`MemoryDomain.deaf`), when the driver waits the timeout and fails as libvirt's does. A
password set through the pretend guest agent is kept in :attr:`MemoryDomain.passwords` (a test's host only),
unless the test silenced the agent (:attr:`MemoryDomain.agent_answers`). Live migration goes to another
pretend host of the process (:mod:`dpustack.drivers.hypervisor.memory_migration`). Every
operation is guarded by the driver's :class:`~dpustack.drivers.faults.FaultInjector` under its own name.
"""

from __future__ import annotations

import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dpustack.contract.fields import MAX_COUNT
from dpustack.contract.numa import MAX_CELL_ID, MAX_CPU_ID, NumaCell, check_cells
from dpustack.drivers.bmc import SerialConsole
from dpustack.drivers.bmc.memory import MemorySerialConsole
from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.hypervisor import DETACH_TIMEOUT, STOP_TIMEOUT, CpuList, DomainState, HypervisorDriver
from dpustack.drivers.hypervisor.definition import (addresses, aliases, definition, device, domain_uuid,
                                                    guest_address, same_device)
from dpustack.drivers.hypervisor.domain_xml import FormName, LabBacking
from dpustack.drivers.hypervisor.memory_migration import MemoryMigration
from dpustack.drivers.hypervisor.topology import parse_cpu_list
from dpustack.drivers.options import DriverOptions
from dpustack.errors import DriverError


def default_cells() -> list[NumaCell]:
    """Two cells of 4 CPUs and 8 GiB each, nothing reserved or used, no huge pages."""
    return [NumaCell(id=0, cpus=[0, 1, 2, 3], memory_mib=8192), NumaCell(id=1, cpus=[4, 5, 6, 7], memory_mib=8192)]


class OtherDomain(BaseModel):
    """A running domain of the pretend host whose use ``topology()`` counts (the domains the driver defines
    itself count for nothing): the memory it uses in one cell (in huge pages of ``page_size_kib``, if given)
    and the offered CPUs it pins."""

    model_config = ConfigDict(extra="forbid")
    uuid: str = Field(min_length=1, max_length=64)
    cell: int = Field(0, ge=0, le=MAX_CELL_ID)
    memory_mib: int = Field(0, ge=0, le=MAX_COUNT)
    page_size_kib: int | None = Field(None, ge=8, le=MAX_COUNT)
    pinned_cpus: list[int] = Field(default_factory=list, max_length=MAX_CPU_ID + 1)


class MemoryHypervisorOptions(DriverOptions):
    """[hypervisor.memory]: the cells the pretend host offers, the running domains whose use it reports, and
    which offered CPUs are for pinned vCPUs (as the libvirt driver's ``dedicated_cpus``; "": no split), and the
    host's name in the process, which live migrations to it are addressed by (``memory:///<host>``; "": a
    random one), and the form of its guests' XML (``lab``: disks on vhost-user-blk sockets and NICs on taps,
    named after the host and the function, which migrate live; ``production``: functions passed through by
    BDF, which do not)."""

    cells: Annotated[list[NumaCell], AfterValidator(check_cells)] = Field(default_factory=default_cells, min_length=1)
    others: list[OtherDomain] = Field(default_factory=list)
    dedicated_cpus: CpuList = ""
    host: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    form: FormName = "production"


@dataclass
class MemoryDomain:
    """One pretend domain: its definition, its state, its devices by id (the definition's and, while it runs,
    the guest's), how often its guest booted, and its serial console."""

    name: str
    digest: str
    xml: str
    state: DomainState = DomainState.OFF
    config: dict[str, ET.Element] = field(default_factory=dict)
    live: dict[str, ET.Element] = field(default_factory=dict)
    boots: int = 0
    deaf: bool = False  # the guest ignores the power button and unplug requests
    agent_answers: bool = True  # the guest's QEMU guest agent runs (set_password)
    users: set[str] = field(default_factory=lambda: {"root"})  # the guest's users
    passwords: dict[str, str] = field(default_factory=dict)  # what set_password set, by user
    console: MemorySerialConsole = field(default_factory=MemorySerialConsole)


class MemoryHypervisorDriver(MemoryMigration, HypervisorDriver):
    """A pretend host: ``topology()`` reports ``cells`` as given (the reservation is already out of them) plus
    what the ``others`` not in ``ignore`` use: each one's memory on its cell (cell 0
    if the host lacks it; the cell's free huge pages of its page size if it has one) and the offered CPUs it
    pins; with ``dedicated_cpus``, each cell's share of them as its dedicated CPUs. Its own domains are :attr:`held`, by UUID. Tests may
    replace ``cells`` and ``others`` between calls, look into :attr:`held`, and arm faults on every operation."""

    options = MemoryHypervisorOptions

    def __init__(self, *, cells: Iterable[NumaCell | dict[str, Any]] | None = None,
                 others: Iterable[OtherDomain | dict[str, Any]] = (), dedicated_cpus: str = "", host: str = "",
                 form: FormName = "production"):
        self.faults = FaultInjector("hypervisor")
        self.form = form
        self.cells = [NumaCell.model_validate(cell) for cell in cells] if cells is not None else default_cells()
        self.others = [OtherDomain.model_validate(domain) for domain in others]
        try:
            parse_cpu_list(dedicated_cpus)
        except ValueError as exc:
            raise DriverError(f"dedicated_cpus: {exc}", field="dedicated_cpus") from exc
        self.dedicated_cpus = dedicated_cpus
        self.held: dict[str, MemoryDomain] = {}
        self._lock = threading.RLock()
        self._register(host or secrets.token_hex(6))

    def lab_backing(self) -> LabBacking | None:
        """In the lab form: a tap and a socket per function, named after the host and the function."""
        if self.form != "lab":
            return None
        host = self.uri.removeprefix("memory:///")
        return LabBacking(tap=lambda function: f"tap-{function.id}"[:15],
                          socket=lambda function: f"/run/dpustack-memory/{host}/{function.id}.sock")

    def validate(self) -> None:
        with self.faults.guard("validate"):
            pass

    def topology(self, ignore: Collection[str] = ()) -> list[NumaCell]:
        with self.faults.guard("topology"):
            cells = {cell.id: cell.model_copy(deep=True) for cell in self.cells}
            if self.dedicated_cpus.strip():
                dedicated = parse_cpu_list(self.dedicated_cpus)
                for cell in cells.values():
                    cell.dedicated_cpus = sorted(dedicated & set(cell.cpus))
            for domain in self.others:
                if domain.uuid in ignore:
                    continue
                home = cells.get(domain.cell) or cells.get(0) or next(iter(cells.values()))
                pages = next((p for p in home.hugepages if p.size_kib == domain.page_size_kib), None)
                if pages is not None:  # huge pages: what it holds is not free, its memory is not "used"
                    pages.free = max(pages.free - domain.memory_mib * 1024 // pages.size_kib, 0)
                else:
                    home.used_memory_mib += domain.memory_mib
                for cell in cells.values():
                    cell.pinned_cpus = sorted(set(cell.pinned_cpus) | (set(domain.pinned_cpus) & set(cell.cpus)))
            return [cells[cell_id] for cell_id in sorted(cells)]

    # ------------------------------------------------------------ domains
    def define(self, uuid: str, xml: str) -> None:
        with self.faults.guard("define"), self._lock:
            wanted = definition(uuid, xml)
            held = self.held.get(wanted.uuid)
            if held is not None:
                if held.digest != wanted.digest:
                    raise DriverError(f"domain {wanted.uuid} is defined already ('{held.name}'), from other XML: "
                                      "undefine it first", field="uuid")
                return
            if any(other.name == wanted.name for other in self.held.values()):
                raise DriverError(f"a domain '{wanted.name}' exists already with another UUID", field="xml")
            self.held[wanted.uuid] = MemoryDomain(name=wanted.name, digest=wanted.digest, xml=wanted.xml,
                                                  config=aliases(ET.fromstring(wanted.xml)))

    def redefine(self, uuid: str, xml: str) -> None:
        with self.faults.guard("redefine"), self._lock:
            wanted, held = definition(uuid, xml), self._held(uuid)
            if held.digest == wanted.digest:
                return
            if held.state != DomainState.OFF:
                raise DriverError(f"domain {wanted.uuid} is {held.state}: stop it to define it again")
            if wanted.name != held.name:
                raise DriverError(f"domain {wanted.uuid} is '{held.name}', not '{wanted.name}'", field="xml")
            held.digest, held.xml, held.config = wanted.digest, wanted.xml, aliases(ET.fromstring(wanted.xml))

    def start(self, uuid: str) -> None:
        with self.faults.guard("start"), self._lock:
            held = self._held(uuid)
            if held.state == DomainState.OFF:
                self._boot(held)

    def stop(self, uuid: str, soft: bool = True, timeout: float = STOP_TIMEOUT) -> None:
        with self.faults.guard("stop"):
            with self._lock:
                key, held = self._key(uuid), self._held(uuid)
                if held.state == DomainState.OFF:
                    return
                if soft and held.state == DomainState.PAUSED:
                    raise DriverError(f"domain {key} is paused and cannot hear the power button: unpause it or "
                                      "stop it hard")
                if not soft or not held.deaf:
                    held.state, held.live = DomainState.OFF, {}
                    return
            time.sleep(timeout)
            raise DriverError(f"domain {key} did not power off within {timeout:g} s of the power button")

    def reboot(self, uuid: str, soft: bool = True) -> None:
        with self.faults.guard("reboot"), self._lock:
            held = self._held(uuid)
            if soft and held.state != DomainState.RUNNING:
                raise DriverError(f"domain {self._key(uuid)} is {held.state}: a soft reboot needs a running guest")
            if not (soft and held.deaf):
                self._boot(held)

    def pause(self, uuid: str) -> None:
        with self.faults.guard("pause"), self._lock:
            held = self._held(uuid)
            if held.state == DomainState.OFF:
                raise DriverError(f"domain {self._key(uuid)} is off: nothing to pause")
            held.state = DomainState.PAUSED

    def unpause(self, uuid: str) -> None:
        with self.faults.guard("unpause"), self._lock:
            held = self._held(uuid)
            if held.state == DomainState.OFF:
                raise DriverError(f"domain {self._key(uuid)} is off: start it instead")
            held.state = DomainState.RUNNING

    def state(self, uuid: str) -> DomainState:
        with self.faults.guard("state"), self._lock:
            held = self.held.get(self._key(uuid))
            return DomainState.MISSING if held is None else held.state

    def undefine(self, uuid: str) -> None:
        with self.faults.guard("undefine"), self._lock:
            self.held.pop(self._key(uuid), None)

    def attach(self, uuid: str, device_xml: str, alias: str) -> None:
        with self.faults.guard("attach"), self._lock:
            element = device(device_xml, alias)
            held = self._held(uuid)
            views = [held.config] + ([held.live] if held.state != DomainState.OFF else [])
            address = guest_address(element)
            for view in views:
                found = view.get(alias)
                if found is not None and not same_device(element, found):
                    raise DriverError(f"domain {self._key(uuid)} has another device '{alias}' already", field="alias")
                taken = [other for other, there in view.items() if address and guest_address(there) == address]
                if found is None and taken:
                    raise DriverError(f"cannot attach '{alias}' to domain {self._key(uuid)}: '{taken[0]}' is at its "
                                      "guest address", field="device_xml")
            for view in views:
                view.setdefault(alias, element)

    def detach(self, uuid: str, alias: str, timeout: float = DETACH_TIMEOUT) -> None:
        with self.faults.guard("detach"):
            with self._lock:
                held = self._held(uuid)
                held.config.pop(alias, None)
                if alias not in held.live or not held.deaf:
                    held.live.pop(alias, None)
                    return
            time.sleep(timeout)
            raise DriverError(f"device '{alias}' of domain {self._key(uuid)} is still present {timeout:g} s after its "
                              "unplug: the guest did not release it")

    def device_addresses(self, uuid: str) -> dict[str, tuple[int, int, int, int]]:
        with self.faults.guard("device_addresses"), self._lock:
            return addresses(self._held(uuid).config)

    def serial_console(self, uuid: str) -> SerialConsole:
        with self.faults.guard("serial_console"), self._lock:
            return self._held(uuid).console

    def set_password(self, uuid: str, user: str, password: str) -> None:
        with self.faults.guard("set_password"), self._lock:
            held, key = self._held(uuid), self._key(uuid)
            if held.state != DomainState.RUNNING:
                raise DriverError(f"domain {key} is {held.state}: setting a password needs a running guest, "
                                  "whose guest agent answers")
            if not held.agent_answers:
                raise DriverError(f"cannot set the password of '{user}' in domain {key} through its guest agent: "
                                  "Guest agent is not responding: QEMU guest agent is not connected")
            if user not in held.users:
                raise DriverError(f"cannot set the password of '{user}' in domain {key} through its guest agent: "
                                  "child process has failed to set user password")
            held.passwords[user] = password

    def domains(self) -> list[str]:
        with self.faults.guard("domains"), self._lock:
            return sorted(self.held)

    # ----------------------------------------------------------- internals
    def _key(self, uuid: str) -> str:
        return domain_uuid(uuid)

    def _held(self, uuid: str) -> MemoryDomain:
        key = self._key(uuid)
        if key not in self.held:
            raise DriverError(f"the pretend host has no domain {key}", field="uuid")
        return self.held[key]

    def _boot(self, held: MemoryDomain) -> None:
        """A new guest: running, with the definition's devices, one boot more."""
        held.state, held.live, held.boots = DomainState.RUNNING, dict(held.config), held.boots + 1
