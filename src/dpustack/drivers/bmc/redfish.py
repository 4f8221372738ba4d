"""BmcDriver over Redfish, through sushy.

``[bmc] address`` is the Redfish service URL (``https://10.1.0.7``); the host
is ``[bmc.redfish] system_id`` or else the first ComputerSystem the service
lists. Every power request is a ``ComputerSystem.Reset`` and is followed by
polling the System until it reports the expected state (BMCs apply power
changes late), for at most ``timeout`` seconds.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import sushy
from pydantic import PositiveFloat
from sushy import exceptions as sushy_errors
from sushy.resources.system.system import System

from dpustack.drivers.bmc import BmcAccess, BmcDriver, Console, HardwareInfo, PowerState, RebootKind, SerialConsole
from dpustack.drivers.bmc.libvirt_console import DomainConsole
from dpustack.drivers.bmc.polling import DEFAULT_INTERVAL, wait_for_power
from dpustack.drivers.options import DriverOptions
from dpustack.errors import DriverError

log = logging.getLogger(__name__)

# -- translation tables -----------------------------------------------------

#: dpustack power action -> (Redfish ResetType, power state the System must reach)
RESET_TYPES: dict[str, tuple[sushy.ResetType, PowerState]] = {
    "power_on": (sushy.ResetType.ON, "on"),
    "power_off": (sushy.ResetType.FORCE_OFF, "off"),
    "soft_power_off": (sushy.ResetType.GRACEFUL_SHUTDOWN, "off"),
    "reboot": (sushy.ResetType.FORCE_RESTART, "on"),
    "soft_reboot": (sushy.ResetType.GRACEFUL_RESTART, "on"),
}

#: actions that are skipped when the System already is in their target state
#: (several BMCs answer an error to "On" for a running host)
IDEMPOTENT = frozenset({"power_on", "power_off", "soft_power_off"})

#: (reboot kind, current power) -> power action; a soft reboot of a stopped host has none
REBOOT_ACTIONS: dict[tuple[RebootKind, PowerState], str] = {
    ("hard", "on"): "reboot",
    ("hard", "off"): "power_on",  # a hard reboot starts a stopped host
    ("soft", "on"): "soft_reboot",
}

#: Redfish PowerState -> dpustack power; a transition counts as the state being left
POWER_STATES: dict[sushy.PowerState, PowerState] = {
    sushy.PowerState.ON: "on",
    sushy.PowerState.OFF: "off",
    sushy.PowerState.POWERING_ON: "off",
    sushy.PowerState.POWERING_OFF: "on",
    sushy.PowerState.PAUSED: "on",
}

#: Manager.SerialConsole ConnectTypesSupported -> (console type, URL scheme, port)
SERIAL_CONSOLES: dict[str, tuple[str, str, int | None]] = {
    "SSH": ("serial", "ssh", None),
    "Telnet": ("serial", "telnet", None),
    "IPMI": ("ipmi-sol", "ipmi", 623),
}

#: Manager.GraphicalConsole ConnectTypesSupported -> console type (served by the BMC's web UI)
GRAPHICAL_CONSOLES: dict[str, str] = {"KVMIP": "kvm"}

#: text of a connection failure -> what to tell the operator
CONNECTION_FAILURES: tuple[tuple[str, str], ...] = (
    ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted (give [bmc.redfish] verify_tls "
                                  "a CA bundle path, or false)"),
    ("Connection refused", "connection refused"),
    ("timed out", "no answer in time"),
    ("Name or service not known", "unknown host name"),
    ("No route to host", "no route to host"),
)

SERVER_SIDE_RETRIES = 2


class RedfishBmcOptions(DriverOptions):
    """[bmc.redfish]: which System, how to check TLS, how long a power change may take (s)."""

    system_id: str | None = None  # None: the first System the service lists
    verify_tls: bool | str = True  # or the path of a CA bundle
    timeout: PositiveFloat = 60.0
    request_timeout: PositiveFloat = 30.0
    console_libvirt_uri: str | None = None  # where the System's serial port is served (see serial_console)


class RedfishBmcDriver(BmcDriver):
    """The host's BMC through its Redfish service; ``mem`` in MiB.

    ``cpu``/``mem`` (``[bmc.host]``) are used only when the BMC does not report them.
    ``verify_tls`` is a bool or the path of a CA bundle.
    """

    options = RedfishBmcOptions
    shared_options = ("bmc.host",)

    def __init__(self, access: BmcAccess, *, system_id: str | None = None, verify_tls: bool | str = True,
                 timeout: float = 60.0, request_timeout: float = 30.0, cpu: int | None = None,
                 mem: int | None = None, poll_interval: float = DEFAULT_INTERVAL,
                 console_libvirt_uri: str | None = None):
        self._access = access
        self._console_uri = console_libvirt_uri
        self._system_id = system_id
        self._verify = verify_tls
        self._timeout = timeout
        self._request_timeout = request_timeout
        self._fallback_cpu = cpu
        self._fallback_mem = mem
        self._poll_interval = poll_interval
        self._lock = threading.RLock()
        self._root: sushy.Sushy | None = None
        self._system: System | None = None

    def __repr__(self) -> str:
        return (f"RedfishBmcDriver(address={self._access.address!r}, username={self._access.username!r}, "
                f"system_id={self._system_id!r})")

    # -- BmcDriver ------------------------------------------------------------
    def validate(self) -> None:
        url = urlsplit(self._access.address)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise DriverError(f"bmc: [bmc] address must be the Redfish service URL, e.g. https://10.1.0.7 "
                              f"(got {self._access.address!r})")
        if not self._access.username:
            raise DriverError("bmc: [bmc] username is empty; the Redfish service needs a login")
        if isinstance(self._verify, str) and not Path(self._verify).exists():
            raise DriverError(f"bmc: the CA bundle {self._verify} ([bmc.redfish] verify_tls) does not exist")

    def power_on(self) -> None:
        self._power_action("power_on")

    def power_off(self, *, soft: bool = False) -> None:
        """Cut the power, or with ``soft`` ask the OS to shut down (waits up to ``timeout``)."""
        self._power_action("soft_power_off" if soft else "power_off")

    def reboot(self, kind: RebootKind) -> None:
        with self._operation("reboot") as system:
            action = REBOOT_ACTIONS.get((kind, self._power_of(system)))
            if action is None:
                raise DriverError("bmc.reboot: a soft reboot needs a running host, and it is off")
            self._request(system, action)

    def power_state(self) -> PowerState:
        with self._operation("power_state") as system:
            return self._power_of(system)

    def hw_info(self) -> HardwareInfo:
        with self._operation("hw_info") as system:
            return HardwareInfo(serial_number=self._serial_number(system), cpu=self._cpu(system),
                                mem=self._mem(system), model=self._model(system))

    def console(self) -> Console:
        """The first console a Manager of the System advertises; type ``none`` (with the Manager's
        Redfish URL) when it advertises none, as sushy-tools' emulator does."""
        with self._operation("console") as system:
            managers = _optional(lambda: system.managers) or []
            for manager in managers:
                found = self._advertised_console(manager)
                if found:
                    return found
            return Console(type="none", url=self._url(managers[0].path if managers else system.path))

    def serial_console(self) -> SerialConsole:
        """The System's serial port through the hypervisor that runs it (``[bmc.redfish] console_libvirt_uri``:
        the libvirt domain whose UUID is the System's, as behind sushy-tools' libvirt driver); Redfish itself
        carries no serial stream."""
        if not self._console_uri:
            raise DriverError("bmc.serial_console: Redfish carries no serial stream; set [bmc.redfish] "
                              "console_libvirt_uri to the libvirt URI that serves the host's serial port")
        with self._operation("serial_console") as system:
            uuid = system.uuid or system.identity
        return DomainConsole(self._console_uri, uuid)

    # -- power ----------------------------------------------------------------
    def _power_action(self, action: str) -> None:
        with self._operation(action) as system:
            self._request(system, action)

    def _request(self, system: System, action: str) -> None:
        reset_type, want = RESET_TYPES[action]
        if action in IDEMPOTENT and self._power_of(system) == want:
            return
        log.info("bmc %s: %s (ResetType %s)", self._access.address, action, reset_type.value)
        system.reset_system(reset_type)
        wait_for_power(lambda: self._fresh_power(system), want, timeout=self._timeout,
                       action=f"bmc.{action}", interval=self._poll_interval)

    def _fresh_power(self, system: System) -> PowerState:
        with self._errors("power_state"):
            system.refresh(force=True)
            return self._power_of(system)

    @staticmethod
    def _power_of(system: System) -> PowerState:
        state = POWER_STATES.get(system.power_state)
        if state is None:
            raise DriverError(f"bmc.power_state: the BMC reports no usable power state ({system.power_state!r})")
        return state

    # -- hardware description -------------------------------------------------
    def _serial_number(self, system: System) -> str:
        """The System's serial number, else its chassis', else the System UUID."""
        chassis = self._chassis(system) if not system.serial_number else None
        found = system.serial_number or (chassis and chassis.serial_number) or system.uuid
        if not found:
            raise DriverError("bmc.hw_info: the BMC reports no serial number and no UUID for the host")
        return found

    def _model(self, system: System) -> str:
        """The System's model, else its chassis' maker and model, else the System's maker and name."""
        if system.model:
            return " ".join(filter(None, (system.manufacturer, system.model)))
        chassis = self._chassis(system)
        if chassis and chassis.model:
            return " ".join(filter(None, (chassis.manufacturer, chassis.model)))
        return " ".join(filter(None, (system.manufacturer, system.name))) or "unknown"

    def _cpu(self, system: System) -> int:
        """Logical CPUs: the threads of every Processor, else ``[bmc.host] cpu``."""
        count = _optional(lambda: system.processors.summary.count)
        return count or self._fallback("cpu", self._fallback_cpu)

    def _mem(self, system: System) -> int:
        gib = system.memory_summary.size_gib if system.memory_summary else None
        return gib * 1024 if gib else self._fallback("mem", self._fallback_mem)

    @staticmethod
    def _fallback(field: str, value: int | None) -> int:
        if value is None:
            raise DriverError(f"bmc.hw_info: the BMC does not report the host's {field}; "
                              f"set [bmc.host] {field} in agent.toml")
        return value

    @staticmethod
    def _chassis(system: System):  # -> sushy Chassis | None
        chassis = _optional(lambda: system.chassis)
        return chassis[0] if chassis else None

    # -- console --------------------------------------------------------------
    def _advertised_console(self, manager) -> Console | None:
        host = _url_host(self._access.address)
        serial = manager.serial_console
        if serial and serial.service_enabled:
            for kind in serial.connect_types_supported or ():
                if kind in SERIAL_CONSOLES:
                    type_, scheme, port = SERIAL_CONSOLES[kind]
                    return Console(type=type_, url=f"{scheme}://{host}" + (f":{port}" if port else ""))
        graphical = manager.graphical_console
        if graphical and graphical.service_enabled:
            for kind in graphical.connect_types_supported or ():
                if kind in GRAPHICAL_CONSOLES:
                    return Console(type=GRAPHICAL_CONSOLES[kind], url=self._access.address.rstrip("/"))
        return None

    def _url(self, path: str) -> str:
        return self._access.address.rstrip("/") + path

    # -- connection and errors ------------------------------------------------
    @contextmanager
    def _operation(self, name: str) -> Iterator[System]:
        """One public call: serialized, errors translated, on a freshly read System."""
        with self._lock, self._errors(name):
            system = self._connected_system()
            system.refresh(force=True)
            yield system

    def _connected_system(self) -> System:
        if self._system is None:
            self._root = sushy.Sushy(self._access.address, username=self._access.username,
                                     password=self._access.password, verify=self._verify,
                                     read_timeout=self._request_timeout,
                                     connect_timeout=min(10.0, self._request_timeout),
                                     server_side_retries=SERVER_SIDE_RETRIES, server_side_retries_delay=1)
            self._system = self._root.get_system(self._system_path(self._root))
        return self._system

    def _system_path(self, root: sushy.Sushy) -> str:
        collection = root.get_system_collection()
        members = list(collection.members_identities)
        if self._system_id is None:
            if not members:
                raise DriverError(f"bmc: the Redfish service at {self._access.address} lists no systems")
            return members[0]
        if self._system_id.startswith("/"):
            return self._system_id
        for path in members:
            if path.rstrip("/").rsplit("/", 1)[-1] == self._system_id:
                return path
        listed = ", ".join(path.rstrip("/").rsplit("/", 1)[-1] for path in members) or "none"
        raise DriverError(f"bmc: the Redfish service at {self._access.address} has no system "
                          f"'{self._system_id}' (it has: {listed}); fix [bmc.redfish] system_id")

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """Turn sushy's errors into one readable DriverError; forget the session after a failure."""
        try:
            yield
        except DriverError as exc:
            raise DriverError(self._scrub(exc.message)) from None
        except sushy_errors.SushyError as exc:
            self._root = self._system = None
            raise DriverError(self._scrub(f"bmc.{operation}: {self._explain(exc)}")) from None

    def _explain(self, exc: sushy_errors.SushyError) -> str:
        where = f"the Redfish service at {self._access.address}"
        if isinstance(exc, sushy_errors.AccessError):
            return (f"{where} refused the login of user '{self._access.username}' (HTTP {exc.status_code}); "
                    f"check [bmc] username and password")
        if isinstance(exc, sushy_errors.ConnectionError):
            return f"cannot reach {where}: {_connection_failure(str(exc))}"
        if isinstance(exc, sushy_errors.ResourceNotFoundError):
            return f"{where} has no such resource ({exc.message})"
        if isinstance(exc, sushy_errors.InvalidParameterValueError):
            return f"{where} does not offer this reset: {exc.message}"
        if isinstance(exc, sushy_errors.HTTPError):
            return f"{where} answered HTTP {exc.status_code}: {getattr(exc, 'detail', None) or exc.message}"
        return f"{where} failed: {exc.message or exc}"

    def _scrub(self, text: str) -> str:
        """Defence in depth: no message leaves this driver holding the password."""
        password = self._access.password
        return text.replace(password, "***") if password else text


def _connection_failure(text: str) -> str:
    for needle, meaning in CONNECTION_FAILURES:
        if needle in text:
            return meaning
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found.group(1).strip() if found else text


def _url_host(address: str) -> str:
    host = urlsplit(address).hostname or address
    return f"[{host}]" if ":" in host else host


def _optional(read):  # -> the value, or None when the BMC lacks the resource or link
    try:
        return read()
    except (sushy_errors.MissingAttributeError, sushy_errors.ResourceNotFoundError):
        return None
