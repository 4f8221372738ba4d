"""In-memory BmcDriver: a host described by config, whose power state may persist in a file.

The host is separate hardware from the DPU, so unlike the other memory
drivers its power state can outlive the agent process (``state_file``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import NonNegativeFloat, PositiveInt

from dpustack.drivers.bmc import BmcAccess, BmcDriver, Console, HardwareInfo, PowerState, RebootKind, SerialConsole
from dpustack.drivers.faults import FaultInjector
from dpustack.drivers.options import DriverOptions, StatePath
from dpustack.errors import DriverError


class MemorySerialConsole(SerialConsole):
    """A pretend serial port that echoes what is typed, as a terminal in echo mode does; :meth:`emit` plays
    the host writing. Every console of one driver is the same port."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outputs: list[Callable[[bytes], None]] = []

    def attach(self, output: Callable[[bytes], None]) -> None:
        with self._lock:
            self._outputs = [output]

    def write(self, data: bytes) -> None:
        self.emit(data)

    def detach(self) -> None:
        with self._lock:
            self._outputs = []

    def emit(self, data: bytes) -> None:
        """What the host prints, to whoever is attached."""
        with self._lock:
            outputs = list(self._outputs)
        for output in outputs:
            output(data)


class MemoryBmcOptions(DriverOptions):
    """[bmc.memory]: the host the memory BMC pretends to manage (``mem`` in MiB); a relative
    ``state_file`` is under the agent's ``state_dir``."""

    cpu: PositiveInt = 64
    mem: PositiveInt = 262144
    serial_number: str = "MEM-0001"
    model: str = "Memory BM"
    console_url: str | None = None
    state_file: StatePath | None = None
    #: seconds a power change takes (a real BMC's take seconds; a test sets it to catch an action mid-step)
    power_seconds: NonNegativeFloat = 0.0


class MemoryBmcDriver(BmcDriver):
    """A pretend BMC; ``mem`` is in MiB."""

    options = MemoryBmcOptions

    def __init__(self, access: BmcAccess | None = None, *, cpu: int = 64, mem: int = 262144,
                 serial_number: str = "MEM-0001", model: str = "Memory BM",
                 console_url: str | None = None, console_type: str = "html5",
                 state_file: str | Path | None = None, power_seconds: float = 0.0):
        self.faults = FaultInjector("bmc")
        address = (access or BmcAccess()).address or "bmc.invalid"
        self._info = HardwareInfo(serial_number=serial_number, cpu=cpu, mem=mem, model=model)
        self._console = Console(type=console_type, url=console_url or f"https://{address}/console")
        self._state_file = Path(state_file) if state_file else None
        self.serial = MemorySerialConsole()
        self._lock = threading.Lock()
        self._power: PowerState = self._load_power()
        self._power_seconds = power_seconds

    def validate(self) -> None:
        if self._info.cpu < 1 or self._info.mem < 1:
            raise DriverError("bmc: the host must have at least one CPU and 1 MiB of memory")
        if self._state_file and not os.access(self._state_file.parent, os.W_OK):
            raise DriverError(f"bmc: cannot write the power state file in {self._state_file.parent}")

    def power_on(self) -> None:
        with self.faults.guard("power_on"):
            time.sleep(self._power_seconds)  # the host changes meanwhile; its state is read as it was
            with self._lock:
                self._set_power("on")

    def power_off(self) -> None:
        with self.faults.guard("power_off"):
            time.sleep(self._power_seconds)  # the host changes meanwhile; its state is read as it was
            with self._lock:
                self._set_power("off")

    def reboot(self, kind: RebootKind) -> None:
        with self.faults.guard("reboot"):
            time.sleep(self._power_seconds)  # the host changes meanwhile; its state is read as it was
            with self._lock:
                if kind == "soft" and self._power == "off":
                    raise DriverError("bmc.reboot: a soft reboot needs a running host, and it is off")
                self._set_power("on")

    def power_state(self) -> PowerState:
        with self.faults.guard("power_state"), self._lock:
            return self._power

    def hw_info(self) -> HardwareInfo:
        with self.faults.guard("hw_info"):
            return self._info

    def console(self) -> Console:
        with self.faults.guard("console"):
            return self._console

    def serial_console(self) -> SerialConsole:
        with self.faults.guard("serial_console"):
            return self.serial

    def _load_power(self) -> PowerState:
        if self._state_file is None or not self._state_file.exists():
            return "off"
        try:
            state = json.loads(self._state_file.read_text())["power_state"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DriverError(f"bmc: unreadable power state file {self._state_file}: {exc}") from exc
        if state not in ("on", "off"):
            raise DriverError(f"bmc: power state file {self._state_file} holds {state!r}")
        return state

    def _set_power(self, state: PowerState) -> None:
        self._power = state
        if self._state_file is None:
            return
        partial = self._state_file.with_suffix(".tmp")
        partial.write_text(json.dumps({"power_state": state}))
        os.replace(partial, self._state_file)
