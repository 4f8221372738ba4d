"""The lab state file: which processes a lab runs and where they listen (JSON, mode 0600)."""

from __future__ import annotations

import fcntl
import json
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpustack.client import Client
from dpustack.errors import DpustackError
from dpustack.tls import client_context

STATE_FILE = "lab.json"


class LabError(DpustackError):
    """The lab cannot do what was asked (not running, already running, a process died…)."""

    code = "lab_error"


def default_dir() -> Path:
    """`$DPUSTACK_HOME/lab`, DPUSTACK_HOME defaulting to ~/.local/share/dpustack."""
    home = os.environ.get("DPUSTACK_HOME") or str(Path.home() / ".local/share/dpustack")
    return Path(home) / "lab"


@dataclass
class LabProcess:
    """One supervised process of the lab."""

    name: str
    role: str  # "controller", "agent", "bmc", or with the OVN data plane "ovn" / "dpu" (daemons)
    pid: int
    started: int | None
    url: str
    log: str
    config: str | None = None
    # How `lab restart` starts it again: the command, the environment it sets over the caller's (minus
    # DPUSTACK_*), its working directory. No argv: an OVN daemon (it detaches itself) or a lab.json from
    # before `lab restart` existed.
    argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    @property
    def restartable(self) -> bool:
        return bool(self.argv)


@dataclass
class LabState:
    """Everything `lab down/status/env` needs to find a running lab."""

    dir: str
    controller_url: str = ""
    controller_home: str = ""
    ca_file: str = ""  # the lab CA that signed the controller's and the agents' certificates
    image: str = ""
    nodes: list[str] = field(default_factory=list)
    dataplane: str = "memory"  # "memory" or "ovn"
    # with the OVN data plane: node hostname -> {"dpu": its DPU namespace, "host": its host namespace}
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    # with the OVN data plane: node hostname -> its host machine: {"uri": its libvirtd, "domain",
    # "console": the console log, "command": the unix socket of its command channel (ttyS1)}
    machines: dict[str, dict[str, str]] = field(default_factory=dict)
    # with the OVN data plane: VM node hostname -> its host: {"uri": the libvirtd its VMs run under,
    # "commands": the directory of their command channels' sockets, <uuid>.sock}
    hypervisors: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: list[LabProcess] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.dir) / STATE_FILE

    def all_namespaces(self) -> list[str]:
        """Every namespace of the lab's nodes (DPU and host), by node."""
        return [ns for node in self.namespaces.values() for ns in (node["dpu"], node["host"])]

    def process(self, name: str) -> LabProcess:
        """The process called `name` (as `lab status` shows it), or a LabError listing the names there are."""
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise LabError(f"the lab in {self.dir} has no process '{name}'; it has: "
                       f"{', '.join(p.name for p in self.processes) or 'none'}")

    def admin_token(self) -> str:
        """The admin token the lab's controller wrote on its first start."""
        token_file = Path(self.controller_home) / "admin-token"
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise LabError(f"cannot read the lab's admin token ({token_file}): {exc.strerror}") from exc

    def tls(self) -> ssl.SSLContext | bool:
        """How to verify the lab controller's certificate: against the lab CA."""
        return client_context(self.ca_file) if self.ca_file else True

    def client(self, token: str | None = None) -> Client:
        """A client of the lab's controller (the admin's unless `token`), verifying it with the lab CA."""
        return Client(self.controller_url, token or self.admin_token(), verify=self.tls())

    def save(self) -> None:
        """Write the state atomically, readable by its owner only."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, lab_dir: Path) -> "LabState | None":
        """The state of the lab in `lab_dir`, or None when there is none."""
        try:
            data = json.loads((lab_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"unreadable lab state {lab_dir / STATE_FILE}: {exc}") from exc
        processes = [LabProcess(**p) for p in data.pop("processes", [])]
        return cls(**data, processes=processes)


@contextmanager
def locked(lab_dir: Path) -> Iterator[None]:
    """Hold the lab directory's lock, so one command at a time changes the processes lab.json records.

    The lock is on the directory itself (flock), so it leaves no file behind; a missing directory
    holds no lab and needs no lock."""
    try:
        fd = os.open(lab_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
