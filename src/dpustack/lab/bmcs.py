"""The lab's BMC emulators, one process each, supervised by PID.

* Redfish: sushy-tools' emulator over libvirt's ``test:///default`` driver,
  which holds one running domain ``test`` (2 vCPUs, 8 GiB) whose power changes
  apply at once. HTTP basic auth from an htpasswd file (bcrypt).
* IPMI: :mod:`dpustack.lab.ipmi_bmc`, a pyghmi BMC server with a FRU
  carrying serial number and model, and the host's power in memory.

Either can drive a real machine instead. Given the URI of the host's private
libvirtd (:class:`dpustack.lab.libvirt_daemon.LibvirtDaemon`), sushy-tools'
libvirt driver serves that daemon's domains as Systems: the lab host's one,
CPU count and memory from its definition (memory in whole GiB, rounded
down), run by :mod:`dpustack.lab.redfish_emulator` so that a restart of the
daemon does not break it. Given the domain too, the IPMI emulator switches
its power and offers its serial console as Serial-over-LAN.

Passwords are random unless given, and sit only in 0600 files in the
emulator's directory.
"""

from __future__ import annotations

import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from dpustack.drivers.bmc import BmcAccess
from dpustack.lab import processes
from dpustack.lab.state import LabError

TEST_LIBVIRT_URI = "test:///default"
START_TIMEOUT = 30.0
# sushy-tools checks the bcrypt hash on every request: a low cost keeps power polling fast
BCRYPT_ROUNDS = 4


@dataclass
class EmulatedBmc:
    """One running BMC emulator and how to log in to it."""

    kind: Literal["redfish", "ipmi"]
    pid: int
    started: int | None
    address: str  # redfish: the service URL; ipmi: the host
    port: int
    username: str
    password: str = field(repr=False)
    log: str = ""
    libvirt_uri: str = ""  # redfish on a lab host: the libvirtd whose domains are its Systems (their serial ports)
    # how it was started, so `lab restart` can start it again
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None

    @property
    def alive(self) -> bool:
        return processes.is_alive(self.pid, self.started)

    def access(self) -> BmcAccess:
        return BmcAccess(address=self.address, username=self.username, password=self.password)

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the emulator (SIGKILL after ``timeout``); stopping a stopped one is fine."""
        processes.stop(self.pid, self.started, timeout=timeout)

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Stop the emulator if it runs, start its recorded command again (same port, login and files) and
        return once the new process answers; ``pid`` and ``started`` are then the new process's."""
        self.stop()
        log = Path(self.log)
        offset = log.stat().st_size if log.exists() else 0
        self.pid = processes.spawn(self.argv, log=log, env=self.env, cwd=Path(self.cwd) if self.cwd else None)
        self.started = processes.start_time(self.pid)
        _wait_ready(self, lambda: self._answers(offset), timeout)

    def _answers(self, log_offset: int = 0) -> bool:
        """Whether the emulator serves: Redfish answers; IPMI said so in its log after ``log_offset``."""
        if self.kind == "redfish":
            return redfish_answers(self.address)
        with open(self.log, "rb") as log:
            log.seek(log_offset)
            return ipmi_listening(log.read().decode(errors="replace"))


def start_redfish(workdir: Path, *, port: int | None = None, username: str = "admin",
                  password: str | None = None, libvirt_uri: str = TEST_LIBVIRT_URI,
                  feature_set: Literal["full", "vmedia", "minimum"] = "full",
                  timeout: float = START_TIMEOUT) -> EmulatedBmc:
    """Start sushy-emulator on 127.0.0.1 and return once it answers ``GET /redfish/v1/``.

    Its Systems are the domains of ``libvirt_uri`` (a lab host's libvirtd: ``qemu+unix:///system?socket=…``);
    it keeps its state (indicator LEDs, virtual media) in ``workdir/state``. ``feature_set`` "minimum"
    leaves out processors, memory, chassis and managers, like a terse BMC."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or processes.free_port()
    password = password or secrets.token_urlsafe(16)
    htpasswd = _private_file(workdir / "htpasswd", f"{username}:{_bcrypt(password)}\n")
    config = _private_file(workdir / "emulator.conf", "\n".join((
        f"SUSHY_EMULATOR_LISTEN_IP = {'127.0.0.1'!r}",
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
        f"SUSHY_EMULATOR_LIBVIRT_URI = {libvirt_uri!r}",
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
        f"SUSHY_EMULATOR_FEATURE_SET = {feature_set!r}",
        f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}",
        "")))
    # the emulator lets these variables override its config file: pin them to ours. What it caches
    # without the state directory goes to $TMPDIR/sushy-emulator: keep that in workdir too
    env = {"SUSHY_EMULATOR_CONFIG": str(config), "SUSHY_EMULATOR_LIBVIRT_URI": libvirt_uri,
           "SUSHY_EMULATOR_LIBVIRT_URL": libvirt_uri, "TMPDIR": str(workdir)}
    log = workdir / "sushy-emulator.log"
    # test:///default lives as long as a connection to it: there sushy-tools' cached domain must stay
    emulator = "sushy_tools.emulator.main" if libvirt_uri.startswith("test://") else "dpustack.lab.redfish_emulator"
    argv = [sys.executable, "-m", emulator, "--config", str(config)]
    pid = processes.spawn(argv, log=log, env=env, cwd=workdir)
    bmc = EmulatedBmc("redfish", pid, processes.start_time(pid), f"http://127.0.0.1:{port}", port,
                      username, password, str(log), argv=argv, env=env, cwd=str(workdir),
                      libvirt_uri="" if libvirt_uri.startswith("test://") else libvirt_uri)
    _wait_ready(bmc, bmc._answers, timeout)
    return bmc


def start_ipmi(workdir: Path, *, port: int | None = None, username: str = "admin", password: str | None = None,
               power: Literal["on", "off"] | None = None, delay: float = 0.0, serial: str = "LAB-0001",
               manufacturer: str = "dpustack lab", product: str = "Emulated BM host",
               libvirt_uri: str | None = None, domain: str | None = None,
               timeout: float = START_TIMEOUT) -> EmulatedBmc:
    """Start :mod:`dpustack.lab.ipmi_bmc` on 127.0.0.1 (UDP) and return once it listens.

    The host is the libvirt ``domain`` on ``libvirt_uri`` (both or neither), else power in memory,
    ``power`` at start (off unless given). ``delay`` makes power changes apply that many seconds
    late, as real BMCs do.
    """
    if (libvirt_uri is None) != (domain is None):
        raise LabError("an IPMI BMC of a libvirt domain needs both libvirt_uri and domain", field="domain")
    if domain is not None and power is not None:
        raise LabError(f"the power of domain '{domain}' is its own: do not give an IPMI BMC of it a power",
                       field="power")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_udp_port()
    password = password or secrets.token_urlsafe(12)  # IPMI v2 passwords hold at most 20 bytes
    password_file = _private_file(workdir / "password", password + "\n")
    log = workdir / "ipmi-bmc.log"
    host = ["--libvirt-uri", libvirt_uri, "--domain", domain] if domain is not None else ["--power", power or "off"]
    argv = [sys.executable, "-m", "dpustack.lab.ipmi_bmc", "--port", str(port), "--user", username,
            "--password-file", str(password_file), *host, "--delay", str(delay),
            "--serial", serial, "--manufacturer", manufacturer, "--product", product]
    pid = processes.spawn(argv, log=log, cwd=workdir)
    bmc = EmulatedBmc("ipmi", pid, processes.start_time(pid), "127.0.0.1", port, username, password, str(log),
                      argv=argv, cwd=str(workdir))
    _wait_ready(bmc, bmc._answers, timeout)
    return bmc


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_ready(bmc: EmulatedBmc, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not bmc.alive:
            raise LabError(f"the {bmc.kind} BMC emulator exited at start: {_tail(bmc.log)}")
        if time.monotonic() > deadline:
            bmc.stop()
            raise LabError(f"the {bmc.kind} BMC emulator did not answer within {timeout:g} s: {_tail(bmc.log)}")
        time.sleep(0.1)


def redfish_answers(address: str) -> bool:
    """Whether the Redfish emulator at `address` (http://HOST:PORT) answers GET /redfish/v1/."""
    try:
        return httpx.get(f"{address}/redfish/v1/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def ipmi_listening(log_text: str) -> bool:
    """Whether the IPMI emulator whose log (of this run) is `log_text` serves requests."""
    return "listening on" in log_text


def _bcrypt(password: str) -> str:
    import bcrypt  # comes with sushy-tools, which only the lab and the tests need

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()


def _private_file(path: Path, text: str) -> Path:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return path


def _tail(log: str, lines: int = 5) -> str:
    try:
        return " | ".join(Path(log).read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"
