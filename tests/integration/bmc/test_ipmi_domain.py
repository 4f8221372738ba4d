"""The agent's IPMI BMC driver, and ipmitool's Serial-over-LAN, against dpustack's IPMI emulator driving a lab
host's libvirt domain (``--libvirt-uri``/``--domain``): chassis power acts on the real domain, whose guest (the
host image) boots and powers off on the ACPI power button, and ``sol activate`` is its serial console.

One host is shared by the module (boots are slow under TCG on two cores); the tests run in file order, each
leaving it as the next expects. ipmitool's ``sol activate`` runs on a pty (it wants a terminal), bounded in time.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpustack.drivers.bmc import HardwareInfo
from dpustack.drivers.bmc.ipmi import IpmiBmcDriver
from dpustack.errors import DriverError
from dpustack.lab import bmcs, processes
from dpustack.lab.bmcs import EmulatedBmc
from dpustack.lab.state import LabError
from host_domain import HostDomain, host_domain
from serial_login import ConsoleReader

BOOT_TIMEOUT = 120.0
SOL_TIMEOUT = 30.0
RECONNECT_TIMEOUT = 45.0  # a killed BMC: pyghmi gives the session up (~13 s), SolConsole logs in again 3 s later
ADMIN_PASS = "Sol-Lab-7f3e"
HOSTNAME = "ipmi-host"
PROMPT = f"{HOSTNAME}:~# ".encode()
METADATA = {"uuid": "3e8a1d52-6f0b-4c7e-9a21-0d4b5c6e7f80", "name": HOSTNAME, "admin_pass": ADMIN_PASS}
SERIAL, MANUFACTURER, PRODUCT = "SN-SOL-0007", "Lab Systems", "TCG Host"
HOST_CPU, HOST_MEM = 1, 1024  # [bmc.host]: IPMI reports neither


@pytest.fixture(scope="module")
def host(host_image, libvirt_cache) -> Iterator[HostDomain]:
    with host_domain(host_image.path, METADATA, cache=libvirt_cache) as made:
        yield made


@pytest.fixture(scope="module")
def emulator(host: HostDomain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedBmc]:
    bmc = bmcs.start_ipmi(tmp_path_factory.mktemp("ipmi-domain"), libvirt_uri=host.daemon.uri,
                          domain=host.machine.name, serial=SERIAL, manufacturer=MANUFACTURER, product=PRODUCT)
    try:
        yield bmc
    finally:
        bmc.stop()
        assert not bmc.alive, f"the IPMI emulator (pid {bmc.pid}) outlived its tests"


def driver(emulator: EmulatedBmc, **options) -> IpmiBmcDriver:
    return IpmiBmcDriver(emulator.access(), **{"port": emulator.port, "cpu": HOST_CPU, "mem": HOST_MEM,
                                               "timeout": BOOT_TIMEOUT, "poll_interval": 0.1, **options})


@pytest.fixture(scope="module")
def bmc(emulator: EmulatedBmc) -> IpmiBmcDriver:
    return driver(emulator)


def emulator_log(emulator: EmulatedBmc) -> str:
    return Path(emulator.log).read_text(errors="replace")


def emulator_log_of_this_run(emulator: EmulatedBmc) -> str:
    """What the emulator logged since it last started (every start appends to its log)."""
    return emulator_log(emulator).rsplit("listening on", 1)[-1]


class Sol:
    """``ipmitool sol activate`` on a pty: what it printed so far, and typing into it."""

    def __init__(self, emulator: EmulatedBmc):
        self.started = time.monotonic()
        self.seen = b""
        self.terminal, child = pty.openpty()
        try:
            self.process = subprocess.Popen(ipmitool_argv(emulator, "sol", "activate"), env=ipmitool_env(emulator),
                                            stdin=child, stdout=child, stderr=child, start_new_session=True)
        finally:
            os.close(child)

    def until(self, text: bytes, timeout: float = SOL_TIMEOUT, *, since: int = 0) -> float:
        """Read until ``text`` was printed (after the :meth:`mark` ``since``); the seconds since ipmitool started.
        AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[since:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} from ipmitool within {timeout:g} s; it printed:\n{self.seen[-2000:]!r}"
            if select.select([self.terminal], [], [], min(remaining, 0.2))[0]:
                try:
                    chunk = os.read(self.terminal, 4096)
                except OSError:  # ipmitool is gone and the pty with it
                    chunk = b""
                assert chunk, f"ipmitool ended before printing {text!r}; it printed:\n{self.seen[-2000:]!r}"
                self.seen += chunk
        return time.monotonic() - self.started

    def type(self, text: bytes) -> None:
        os.write(self.terminal, text)

    def mark(self) -> int:
        """Where the output is now: :meth:`after` reads from there."""
        return len(self.seen)

    def after(self, mark: int) -> bytes:
        return self.seen[mark:]

    def quit(self) -> int:
        """End ipmitool as a user does (``~.`` after a newline: it deactivates the payload); its exit status."""
        self.type(b"\r~.")
        try:
            return self.process.wait(SOL_TIMEOUT)
        finally:
            self.close()

    def close(self) -> None:
        """Kill ipmitool if it still runs (as a crash would: it deactivates nothing); close the pty."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.terminal >= 0:
            os.close(self.terminal)
            self.terminal = -1


@pytest.fixture
def sols() -> Iterator[list[Sol]]:
    """The ipmitool sessions of a test, killed if it left any."""
    made: list[Sol] = []
    yield made
    for sol in made:
        sol.close()


def open_sol(sols: list[Sol], emulator: EmulatedBmc) -> Sol:
    sol = Sol(emulator)
    sols.append(sol)
    return sol


def ipmitool(emulator: EmulatedBmc, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ipmitool_argv(emulator, *command), env=ipmitool_env(emulator), capture_output=True,
                          text=True, timeout=SOL_TIMEOUT, check=False)


def ipmitool_argv(emulator: EmulatedBmc, *command: str) -> list[str]:
    """ipmitool's command line; the password goes by environment (-E), as the agent's driver passes it."""
    return ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(emulator.port), "-U", emulator.username, "-E",
            *command]


def ipmitool_env(emulator: EmulatedBmc) -> dict[str, str]:
    return {**os.environ, "IPMI_PASSWORD": emulator.password}


def test_an_emulator_of_a_domain_that_is_not_there_says_so(host, tmp_path):
    with pytest.raises(LabError, match="exited at start: .*no host: no domain 'no-such-host'"):
        bmcs.start_ipmi(tmp_path, libvirt_uri=host.daemon.uri, domain="no-such-host")


# ------------------------------------------------------------------------- power on
def test_power_on_starts_the_domain_and_its_guest_boots(host, bmc, timings):
    assert bmc.power_state() == "off" and host.machine.state() == "off"

    started = time.monotonic()
    bmc.power_on()
    timings["IPMI power on: call returns"] = time.monotonic() - started

    assert host.machine.state() == "on"
    host.wait_for_step("ready", count=1, timeout=BOOT_TIMEOUT)
    timings["IPMI power on -> guest ready"] = time.monotonic() - started
    assert bmc.power_state() == "on" and "failed" not in host.steps()


def test_hw_info_is_the_fru_and_the_configured_size(bmc):
    assert bmc.hw_info() == HardwareInfo(serial_number=SERIAL, cpu=HOST_CPU, mem=HOST_MEM,
                                         model=f"{MANUFACTURER} {PRODUCT}")


# ------------------------------------------------------------------- Serial-over-LAN
def test_sol_is_the_guests_console_where_root_logs_in(emulator, sols, timings):
    sol = open_sol(sols, emulator)
    timings["SOL activate -> operational"] = sol.until(b"SOL Session operational")
    typed = time.monotonic()
    sol.type(b"\r")  # the getty prompts again
    sol.until(f"{HOSTNAME} login: ".encode())
    timings["SOL: Enter -> login prompt"] = time.monotonic() - typed

    sol.type(b"root\r")
    sol.until(b"Password: ")
    sol.type(ADMIN_PASS.encode() + b"\r")
    sol.until(PROMPT)
    sol.type(b"echo SOL-$((6 * 7)) $(id -un)\r")
    sol.until(b"SOL-42 root")
    mark = sol.mark()
    sol.type(b"exit\r")
    sol.until(f"{HOSTNAME} login: ".encode(), since=mark)  # logged out before ipmitool leaves

    assert sol.quit() == 0
    assert "SOL deactivated" in emulator_log(emulator)


def test_the_drivers_serial_console_is_sol_and_takes_the_payload_a_killed_ipmitool_held(emulator, bmc, sols,
                                                                                        timings):
    held = open_sol(sols, emulator)
    held.until(b"SOL Session operational")
    held.close()  # killed: the payload stays active, as the agent finds it after a user's crash

    console = ConsoleReader(bmc.serial_console())  # pyghmi's SOL client, as the agent holds it
    try:
        timings["driver SOL: attach -> login prompt"] = console.login(HOSTNAME, ADMIN_PASS)
    finally:
        console.detach()

    assert ipmitool(emulator, "sol", "deactivate").stderr.strip() == "Info: SOL payload already de-activated"


def test_the_drivers_serial_console_comes_back_by_itself_when_the_bmc_is_killed_and_started_again(emulator, bmc,
                                                                                                    timings):
    console = ConsoleReader(bmc.serial_console())  # attached once, as the agent holds it
    try:
        console.answer(f"{HOSTNAME} login: ".encode(), b"\r", repeat=True)
        console.answer(b"Password: ", b"root\r")
        console.answer(PROMPT, ADMIN_PASS.encode() + b"\r")
        console.answer(b"BEFORE-42", b"echo BEFORE-$((6 * 7))\r")

        old_pid = emulator.pid
        assert processes.send_signal(emulator.pid, emulator.started, signal.SIGKILL)
        assert processes.wait_gone(emulator.pid, emulator.started, 10.0)
        killed = time.monotonic()
        emulator.restart()  # the same port and login, a new process that knows no session
        assert emulator.pid != old_pid and emulator.alive

        # a user at the console types until the shell answers, through the same console and callback
        console.answer(b"AFTER-42 root", b"echo AFTER-$((6 * 7)) $(id -un)\r", repeat=True,
                       timeout=RECONNECT_TIMEOUT)
        timings["driver SOL: BMC killed -> console answers again"] = time.monotonic() - killed
        console.answer(f"{HOSTNAME} login: ".encode(), b"exit\r")
    finally:
        console.detach()

    assert "SOL activated" in emulator_log_of_this_run(emulator)
    assert ipmitool(emulator, "sol", "deactivate").stderr.strip() == "Info: SOL payload already de-activated"


def test_one_session_at_a_time_and_sol_deactivate_frees_what_a_killed_ipmitool_held(emulator, sols):
    first = open_sol(sols, emulator)
    first.until(b"SOL Session operational")
    second = open_sol(sols, emulator)
    second.until(b"SOL payload already active on another session")
    assert second.process.wait(SOL_TIMEOUT) != 0

    first.close()  # killed: it deactivates nothing, the payload stays active
    third = open_sol(sols, emulator)
    third.until(b"SOL payload already active on another session")

    assert ipmitool(emulator, "sol", "deactivate").returncode == 0
    fourth = open_sol(sols, emulator)
    fourth.until(b"SOL Session operational")
    fourth.type(b"\r")
    fourth.until(f"{HOSTNAME} login: ".encode())
    assert fourth.quit() == 0
    assert ipmitool(emulator, "sol", "deactivate").stderr.strip() == "Info: SOL payload already de-activated"


def test_sol_follows_the_host_through_a_power_cycle(host, emulator, sols, timings):
    sol = open_sol(sols, emulator)
    sol.until(b"SOL Session operational")
    qemu, readies, mark = host.qemu_pid(), host.steps().count("ready"), sol.mark()

    started = time.monotonic()
    driver(emulator, hard_reboot="cycle").reboot("hard")  # a new QEMU, a new pty: the console is opened again

    sol.until(b"SYSLINUX")
    timings["IPMI power cycle -> SYSLINUX on SOL"] = time.monotonic() - started
    sol.until(b'dpustack-init: {"step":"ready"}', BOOT_TIMEOUT)
    assert b'{"step":"boot"' in sol.after(mark)
    assert host.qemu_pid() not in (None, qemu) and host.steps().count("ready") == readies + 1
    assert sol.quit() == 0


# ------------------------------------------------------------------------- power
def test_a_hard_reboot_resets_the_guest(host, bmc, timings):
    qemu, readies = host.qemu_pid(), host.steps().count("ready")

    started = time.monotonic()
    bmc.reboot("hard")  # chassis power reset: the reset button

    host.wait_for_step("ready", count=readies + 1, timeout=BOOT_TIMEOUT)
    timings["IPMI power reset -> guest ready"] = time.monotonic() - started
    assert host.qemu_pid() == qemu and host.steps().count("poweroff") == 0


def test_a_soft_reboot_powers_off_through_the_guest_then_on(host, bmc, emulator):
    readies, poweroffs = host.steps().count("ready"), host.steps().count("poweroff")

    bmc.reboot("soft")  # chassis power soft, wait until off, chassis power on

    host.wait_for_step("ready", count=readies + 1, timeout=BOOT_TIMEOUT)
    assert host.steps().count("poweroff") == poweroffs + 1
    assert "ACPI power button pressed: the guest decides" in emulator_log(emulator)


def test_a_soft_power_off_is_the_guest_powering_off(host, bmc, timings):
    qemu, poweroffs = host.qemu_pid(), host.steps().count("poweroff")

    started = time.monotonic()
    bmc.power_off(soft=True)
    timings["IPMI power soft -> off"] = time.monotonic() - started

    assert host.steps().count("poweroff") == poweroffs + 1 and host.machine.state() == "off"
    host.wait_qemu_gone(qemu)


def test_reset_and_cycle_are_refused_while_the_host_is_off(host, bmc, emulator):
    for how in ("reset", "cycle"):
        with pytest.raises(DriverError, match="refuses this in the host's present power state"):
            bmc._act(how)
    assert host.machine.state() == "off"


def test_power_off_ends_qemu(host, bmc, timings):
    bmc.power_on()
    qemu = host.qemu_pid()
    assert qemu is not None

    started = time.monotonic()
    bmc.power_off()
    timings["IPMI power off: call returns"] = time.monotonic() - started
    host.wait_qemu_gone(qemu)

    assert host.machine.state() == "off" and bmc.power_state() == "off" and host.qemu_pid() is None


def test_the_bmc_and_its_sol_outlive_a_restart_of_the_hosts_libvirtd(host, bmc, emulator, sols):
    host.daemon.stop()
    host.daemon.start()
    assert bmc.power_state() == "off"

    sol = open_sol(sols, emulator)
    sol.until(b"SOL Session operational")
    bmc.power_on()
    sol.until(b"SYSLINUX")  # the console, on a new connection to the new daemon
    assert sol.quit() == 0
    bmc.power_off()
    assert host.machine.state() == "off"
