"""BmcDriver over IPMI v2 (lanplus), by running ``ipmitool``.

The password reaches ipmitool through the ``IPMI_PASSWORD`` environment
variable (``-E``), never its command line, where any local user could read
it in ``ps``. Power requests are ``chassis power on|off|soft|reset|cycle``,
each followed by polling ``chassis power status`` for at most ``timeout``
seconds. IPMI has no standard record of CPU count or memory size, so those
come from ``[bmc.host]``; serial number and model come from ``fru print 0``
(then ``mc guid`` / ``mc info``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from typing import Literal

from pydantic import Field, PositiveFloat

from dpustack.drivers.bmc import BmcAccess, BmcDriver, Console, HardwareInfo, PowerState, RebootKind, SerialConsole
from dpustack.drivers.bmc.polling import DEFAULT_INTERVAL, wait_for_power
from dpustack.drivers.bmc.sol import SolConsole
from dpustack.drivers.options import DriverOptions
from dpustack.errors import DriverError

log = logging.getLogger(__name__)

# -- translation tables -----------------------------------------------------

#: dpustack power action -> (``chassis power`` argument, power state the host must reach)
POWER_COMMANDS: dict[str, tuple[str, PowerState]] = {
    "power_on": ("on", "on"),
    "power_off": ("off", "off"),
    "soft_power_off": ("soft", "off"),
    "reset": ("reset", "on"),
    "cycle": ("cycle", "on"),
}

#: actions that are skipped when the host already is in their target state
IDEMPOTENT = frozenset({"power_on", "power_off", "soft_power_off"})

#: (reboot kind, current power) -> the actions that make it; IPMI has no soft reboot of its own,
#: so it is a soft power off followed by power on. A soft reboot of a stopped host has none.
REBOOT_ACTIONS: dict[tuple[RebootKind, PowerState], tuple[str, ...]] = {
    ("hard", "on"): ("hard_reboot",),  # [bmc.ipmi] hard_reboot: reset or cycle
    ("hard", "off"): ("power_on",),  # a hard reboot starts a stopped host
    ("soft", "on"): ("soft_power_off", "power_on"),
}

#: ``chassis power status`` answer -> dpustack power
POWER_STATES: dict[str, PowerState] = {"Chassis Power is on": "on", "Chassis Power is off": "off"}

#: ipmitool's stderr (with -v) -> what to tell the operator; the most specific first
IPMITOOL_ERRORS: tuple[tuple[str, str], ...] = (
    ("RAKP 2 HMAC is invalid", "the BMC at {target} refused the password of user '{user}'; "
                               "check [bmc] username and password"),
    ("Unauthorized name", "the BMC at {target} does not know user '{user}'"),
    ("no response from RAKP 1", "the BMC at {target} did not accept user '{user}' (no answer to the login)"),
    ("Get Auth Capabilities error", "no IPMI BMC answers at {target}"),
    ("Insufficient privilege", "user '{user}' may not do this on the BMC at {target} "
                               "(it needs the ADMINISTRATOR privilege)"),
    ("Command not supported in present state", "the BMC at {target} refuses this in the host's "
                                               "present power state"),
    ("Unable to establish IPMI v2 / RMCP+ session", "no IPMI session with the BMC at {target}"),
)

#: ``fru print`` fields, in order of preference
FRU_SERIAL = ("Product Serial", "Chassis Serial", "Board Serial")
FRU_MODEL = (("Product Manufacturer", "Product Name"), ("Board Mfg", "Board Product"))

PROBE_TIMEOUT = 1  # seconds ipmitool waits for one answer (-N)
PROBE_RETRIES = 3  # times ipmitool asks again (-R)
COMMAND_TIMEOUT = 30.0
MAX_PASSWORD_BYTES = 20  # IPMI v2  # seconds before a hung ipmitool is killed


class IpmiBmcOptions(DriverOptions):
    """[bmc.ipmi]: the BMC's UDP port, how long a power change may take (s), and IPMI quirks."""

    port: int = Field(623, ge=1, le=65535)
    timeout: PositiveFloat = 60.0
    cipher_suite: int | None = Field(None, ge=0, le=17)  # None: ipmitool picks the best offered
    hard_reboot: Literal["reset", "cycle"] = "reset"


class IpmiBmcDriver(BmcDriver):
    """The host's BMC over IPMI; ``[bmc] address`` is its host name or IP, ``mem`` in MiB (``[bmc.host]``)."""

    options = IpmiBmcOptions
    shared_options = ("bmc.host",)

    def __init__(self, access: BmcAccess, *, port: int = 623, timeout: float = 60.0,
                 cipher_suite: int | None = None, hard_reboot: Literal["reset", "cycle"] = "reset",
                 cpu: int | None = None, mem: int | None = None, ipmitool: str = "ipmitool",
                 poll_interval: float = DEFAULT_INTERVAL):
        self._access = access
        self._port = port
        self._timeout = timeout
        self._cipher_suite = cipher_suite
        self._hard_reboot = hard_reboot
        self._cpu = cpu
        self._mem = mem
        self._ipmitool = ipmitool
        self._poll_interval = poll_interval
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"IpmiBmcDriver(address={self._access.address!r}, port={self._port}, username={self._access.username!r})"

    # -- BmcDriver ------------------------------------------------------------
    def validate(self) -> None:
        if not self._access.address or "/" in self._access.address:
            raise DriverError(f"bmc: [bmc] address must be the BMC's host name or IP address "
                              f"(got {self._access.address!r}); its port is [bmc.ipmi] port")
        if not self._access.username:
            raise DriverError("bmc: [bmc] username is empty; an IPMI session needs a user")
        if len(self._access.password.encode()) > MAX_PASSWORD_BYTES:
            raise DriverError(f"bmc: an IPMI v2 password holds at most {MAX_PASSWORD_BYTES} bytes")
        if self._hard_reboot not in ("reset", "cycle"):
            raise DriverError(f"bmc: [bmc.ipmi] hard_reboot must be reset or cycle, not {self._hard_reboot!r}")
        if self._cpu is None or self._mem is None:
            raise DriverError("bmc: IPMI BMCs do not report CPU count and memory size; "
                              "set [bmc.host] cpu and mem in agent.toml")
        if shutil.which(self._ipmitool) is None:
            raise DriverError(f"bmc: '{self._ipmitool}' is not installed (Debian: apt-get install ipmitool)")

    def power_on(self) -> None:
        with self._lock:
            self._act("power_on")

    def power_off(self, *, soft: bool = False) -> None:
        """Cut the power, or with ``soft`` ask the OS to shut down (ACPI; waits up to ``timeout``)."""
        with self._lock:
            self._act("soft_power_off" if soft else "power_off")

    def reboot(self, kind: RebootKind) -> None:
        with self._lock:
            actions = REBOOT_ACTIONS.get((kind, self._read_power("reboot")))
            if actions is None:
                raise DriverError("bmc.reboot: a soft reboot needs a running host, and it is off")
            for action in actions:
                self._act(self._hard_reboot if action == "hard_reboot" else action, skip_if_there=False)

    def power_state(self) -> PowerState:
        with self._lock:
            return self._read_power("power_state")

    def hw_info(self) -> HardwareInfo:
        """Serial number and model from the FRU (else ``mc guid`` / ``mc info``); CPU and memory from
        ``[bmc.host]``."""
        with self._lock:
            fru = self._fields("hw_info", "fru", "print", "0", tolerate=True)
            serial = _first(fru, FRU_SERIAL) or self._fields("hw_info", "mc", "guid").get("System GUID", "")
            model = _first_pair(fru, FRU_MODEL) or self._mc_model()
            if not serial:
                raise DriverError("bmc.hw_info: the BMC reports neither a FRU serial number nor a GUID")
            if self._cpu is None or self._mem is None:
                raise DriverError("bmc.hw_info: IPMI BMCs do not report CPU count and memory size; "
                                  "set [bmc.host] cpu and mem in agent.toml")
            return HardwareInfo(serial_number=serial, cpu=self._cpu, mem=self._mem, model=model)

    def console(self) -> Console:
        """Serial-over-LAN on the BMC (``ipmitool sol activate``)."""
        return Console(type="ipmi-sol", url=f"ipmi://{self._target}")

    def serial_console(self) -> SerialConsole:
        """The BMC's serial-over-LAN (pyghmi's SOL client)."""
        return SolConsole(self._access, self._port)

    # -- power ----------------------------------------------------------------
    def _act(self, action: str, *, skip_if_there: bool = True) -> None:
        argument, want = POWER_COMMANDS[action]
        if skip_if_there and action in IDEMPOTENT and self._read_power(action) == want:
            return
        log.info("bmc %s: chassis power %s", self._target, argument)
        self._run(action, "chassis", "power", argument)
        wait_for_power(lambda: self._read_power("power_state"), want, timeout=self._timeout,
                       action=f"bmc.{action}", interval=self._poll_interval)

    def _read_power(self, operation: str) -> PowerState:
        answer = self._run(operation, "chassis", "power", "status").strip()
        if answer not in POWER_STATES:
            raise DriverError(f"bmc.{operation}: unexpected answer from the BMC at {self._target}: {answer!r}")
        return POWER_STATES[answer]

    # -- hardware description -------------------------------------------------
    def _mc_model(self) -> str:
        info = self._fields("hw_info", "mc", "info", tolerate=True)
        parts = [re.sub(r"\s*\(0x[0-9a-f]+\)$", "", info.get(key, "")) for key in ("Manufacturer Name", "Product Name")]
        return " ".join(part for part in parts if part and part != "Unknown") or "unknown"

    def _fields(self, operation: str, *command: str, tolerate: bool = False) -> dict[str, str]:
        """``Key : Value`` lines of a command's output; with ``tolerate``, an empty dict if the BMC
        does not implement the command."""
        try:
            output = self._run(operation, *command)
        except DriverError:
            if not tolerate:
                raise
            log.info("bmc %s: '%s' is not answered; using what else the BMC reports", self._target, " ".join(command))
            return {}
        fields: dict[str, str] = {}
        for line in output.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        return fields

    # -- running ipmitool -----------------------------------------------------
    @property
    def _target(self) -> str:
        host = self._access.address
        return f"[{host}]:{self._port}" if ":" in host else f"{host}:{self._port}"

    def _argv(self, command: tuple[str, ...]) -> list[str]:
        argv = [self._ipmitool, "-v", "-I", "lanplus", "-H", self._access.address, "-p", str(self._port),
                "-U", self._access.username, "-E", "-N", str(PROBE_TIMEOUT), "-R", str(PROBE_RETRIES)]
        if self._cipher_suite is not None:
            argv += ["-C", str(self._cipher_suite)]
        return argv + list(command)

    def _run(self, operation: str, *command: str) -> str:
        """ipmitool's stdout; a failure becomes a DriverError explaining it."""
        argv = self._argv(command)
        env = {**os.environ, "IPMI_PASSWORD": self._access.password}
        env.pop("IPMITOOL_PASSWORD", None)
        log.debug("running %s", " ".join(argv))  # the password is in env, not argv
        try:
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT)
        except FileNotFoundError:
            raise DriverError(f"bmc.{operation}: '{self._ipmitool}' is not installed") from None
        except subprocess.TimeoutExpired:
            raise DriverError(f"bmc.{operation}: ipmitool got no answer from {self._target} "
                              f"in {COMMAND_TIMEOUT:g} s") from None
        if done.returncode != 0:
            raise DriverError(self._scrub(f"bmc.{operation}: {self._explain(done.stderr)}"))
        return done.stdout

    def _explain(self, stderr: str) -> str:
        for needle, meaning in IPMITOOL_ERRORS:
            if needle in stderr:
                return meaning.format(target=self._target, user=self._access.username)
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        return f"ipmitool failed against {self._target}: {lines[-1] if lines else 'no message'}"

    def _scrub(self, text: str) -> str:
        password = self._access.password
        return text.replace(password, "***") if password else text


def _first(fields: dict[str, str], keys: tuple[str, ...]) -> str:
    return next((fields[key] for key in keys if fields.get(key)), "")


def _first_pair(fields: dict[str, str], pairs: tuple[tuple[str, str], ...]) -> str:
    for maker, name in pairs:
        if fields.get(name):
            return " ".join(filter(None, (fields.get(maker), fields[name])))
    return ""
