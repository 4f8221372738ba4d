"""A private ``libvirtd`` per lab host namespace, started and stopped by PID.

    daemon = LibvirtDaemon(Path("lab/nodes/bm-1/libvirt"), "host-bm-1").start()
    daemon.uri        # qemu+unix:///system?socket=lab/nodes/bm-1/libvirt/run/libvirt/libvirt-sock
    daemon.stop()     # libvirtd and every QEMU it started are gone

Several run at once and none touches the machine's ``/etc/libvirt``,
``/run`` or ``/var``: the system daemon binary runs inside the namespace
(``ip netns exec``) in a private mount namespace (``unshare --mount
--propagation private``) where directories of ``dir`` are bind-mounted over
the paths a privileged libvirtd uses (they are compiled in, no option moves
them): ``etc`` on ``/etc/libvirt``, ``run`` on ``/run``, ``lib`` on
``/var/lib``, ``log`` on ``/var/log`` and the capabilities cache on
``/var/cache``. Paths handed to the daemon (a domain's logs and sockets) must
therefore lie outside those five; ``dir`` itself too.

What libvirt 9.0 needs on a machine without systemd, and how it gets it:

* the user and group ``libvirt-qemu`` (the QEMU driver looks them up before
  reading its configuration): when the machine has none, copies of
  ``/etc/passwd`` and ``/etc/group`` that add them are bind-mounted over the
  originals, in the daemon's mount namespace only;
* ``qemu.conf``: QEMU as root, no security driver, no cgroups, no per-QEMU
  mount namespace, ``stdio_handler = "file"`` (QEMU's output goes to
  ``log/libvirt/qemu/<domain>.log``; no virtlogd), no lock manager (no virtlockd);
  with ``migration_host``, the address another host's QEMU sends a guest
  migrating here to (libvirt's default, the machine's host name, is not
  reachable from another namespace);
* ``libvirtd.conf``: a ``host_uuid`` of its own (derived from ``dir``: stable
  across restarts, distinct between daemons), no authentication on its unix
  sockets (no polkit), warnings and errors to ``libvirtd.log``.

The first start probes QEMU's capabilities (about 8 s here); the result is
cached in ``cache``, which daemons may share (the files are replaced
atomically): a daemon finding them answers in about 0.2 s.

libvirtd runs under :mod:`dpustack.lab.reaper`, a child subreaper, so each
QEMU it daemonizes is reaped as soon as it exits (libvirt waits for that
before a destroy returns; this machine kind's PID 1 reaps only every 1.5 s
or so). The daemon's ``pid`` is the reaper's: it leads the process group of
both (libvirtd's own pidfile, ``run/libvirtd.pid``, names libvirtd).
QEMU processes outlive libvirtd (each runs in its own session), so ``stop``
kills the daemon's process group and then each QEMU named by a pidfile in
the daemon's state directory; a PID counts as the daemon's (never a recycled
one) only if the process sees ``run`` as its ``/run``, which only processes
in the daemon's mount namespace do.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path

import libvirt

from dpustack.lab import processes
from dpustack.lab.daemon_pids import mentions
from dpustack.lab.state import LabError
from dpustack.libvirt_host import connect
from dpustack.linux import netns

LIBVIRTD = "/usr/sbin/libvirtd"
QEMU_USER = "libvirt-qemu"  # libvirt's compiled-in default; Debian's libvirt-daemon-system creates it
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_SOCKET = "run/libvirt/libvirt-sock"
_PIDFILE = "run/libvirtd.pid"
_QEMU_STATE = "run/libvirt/qemu"  # <domain>.pid of each running QEMU (and libvirt's own driver.pid)
_QEMU_LOGS = "log/libvirt/qemu"
_MAX_SOCKET_PATH = 107
# (directory of `dir`, where the daemon sees it); the capabilities cache comes on top
_MOUNTS = (("etc", "/etc/libvirt"), ("run", "/run"), ("lib", "/var/lib"), ("log", "/var/log"))
_CACHE_TARGET = "/var/cache"
_HIDDEN = ("/etc/libvirt", "/run", "/var/lib", "/var/log", "/var/cache")

LIBVIRTD_CONF = """\
host_uuid = "{host_uuid}"
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0700"
log_outputs = "3:stderr"
"""

QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


class LibvirtDaemon:
    """A libvirtd in network namespace ``netns`` with all its files under ``dir``; QEMU's capabilities
    cached in ``cache`` (default ``dir/cache``).

    Once started, ``pid`` and ``started`` (its start time, :func:`dpustack.lab.processes.start_time`) are
    what the lab records, with ``argv`` and ``log`` (the daemon's stderr)."""

    def __init__(self, dir: Path, netns_name: str, *, cache: Path | None = None, migration_host: str = ""):
        self.dir = Path(dir).resolve()
        self.netns = netns_name
        self.migration_host = migration_host
        self.cache = Path(cache).resolve() if cache is not None else self.dir / "cache"
        self.log = self.dir / "libvirtd.log"
        self.pid: int | None = None
        self.started: int | None = None
        self.argv: list[str] = []

    @property
    def socket(self) -> Path:
        return self.dir / _SOCKET

    @property
    def uri(self) -> str:
        """The connection URI of this daemon's QEMU driver."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def alive(self) -> bool:
        return self.pid is not None and processes.is_alive(self.pid, self.started)

    def qemu_log(self, domain: str) -> Path:
        """Where QEMU's own output (command line, errors) for ``domain`` goes."""
        return self.dir / _QEMU_LOGS / f"{domain}.log"

    def start(self, *, timeout: float = START_TIMEOUT) -> "LibvirtDaemon":
        """Start the daemon (after cleaning up one left behind in ``dir``); return once it answers
        ``getCapabilities``. LabError with its log's tail if it exits or does not answer in ``timeout`` s;
        nothing of it is left running then."""
        self._check_paths()
        if not Path(LIBVIRTD).exists():
            raise LabError(f"{LIBVIRTD} is missing (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)")
        if not netns.exists(self.netns):
            raise LabError(f"network namespace '{self.netns}' does not exist")
        self.stop()
        mounts = self._write_files()
        self.argv = ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
                     *processes.python_entry_point("dpustack.lab.reaper"), "sh", "-c", _script(mounts)]
        try:
            self.pid = processes.spawn(self.argv, log=self.log)
            self.started = processes.start_time(self.pid)
            self._wait_until_answering(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def qemu_pids(self) -> dict[str, int]:
        """The running QEMU processes of this daemon's domains, by domain name."""
        found = {}
        for pidfile in sorted((self.dir / _QEMU_STATE).glob("*.pid")):
            pid = _read_pid(pidfile)
            if pid is not None and self._owns(pid) and mentions(pid, "qemu-system"):
                found[pidfile.stem] = pid
        return found

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Kill the daemon (SIGTERM, then SIGKILL), then its QEMU processes; remove their pidfiles.
        Stopping a stopped daemon, or one only a pidfile in ``dir`` remembers, is fine."""
        pid, started = self.pid, self.started
        if pid is None or not processes.is_alive(pid, started):
            pid = self._leftover()
            started = processes.start_time(pid) if pid is not None else None
        if pid is not None:
            processes.stop(pid, started, timeout=timeout)
            if processes.is_alive(pid, started):
                raise LabError(f"libvirtd (pid {pid}) in {self.dir} did not stop")
        for name, qemu in self.qemu_pids().items():
            qemu_started = processes.start_time(qemu)
            _kill(qemu, qemu_started, timeout)
            if processes.is_alive(qemu, qemu_started):
                raise LabError(f"QEMU of domain '{name}' (pid {qemu}) did not stop")
        # Every QEMU is gone: its pidfile, libvirt's status of it (a next daemon would act on the PID in it)
        # and its private directory are stale.
        state = self.dir / _QEMU_STATE
        for stale in (*state.glob("*.pid"), *state.glob("*.xml")):
            stale.unlink(missing_ok=True)
        for private in (self.dir / "lib/libvirt/qemu").glob("domain-*"):
            shutil.rmtree(private, ignore_errors=True)
        (self.dir / _PIDFILE).unlink(missing_ok=True)
        self.pid = self.started = None

    # ------------------------------------------------------------ internals
    def _check_paths(self) -> None:
        for hidden in _HIDDEN:
            for path in (self.dir, self.cache):
                if path == Path(hidden) or Path(hidden) in path.parents:
                    raise LabError(f"a lab libvirtd's directory cannot be under {hidden} (it hides that path "
                                   f"from the daemon): {path}", field="dir")
        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            raise LabError(f"the libvirtd socket path {self.socket} is longer than {_MAX_SOCKET_PATH} bytes: "
                           "use a shorter directory", field="dir")

    def _write_files(self) -> list[tuple[Path, str]]:
        """Write the daemon's configuration; return the bind mounts it runs under, (source, target)."""
        for name, _ in _MOUNTS:
            (self.dir / name).mkdir(parents=True, exist_ok=True)
        (self.dir / "run/lock").mkdir(exist_ok=True)  # /var/lock: virDomainOpenConsole locks the pty there
        self.cache.mkdir(parents=True, exist_ok=True)
        host_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"dpustack-lab-libvirtd:{self.dir}")
        (self.dir / "etc/libvirtd.conf").write_text(LIBVIRTD_CONF.format(host_uuid=host_uuid))
        migration = f'migration_host = "{self.migration_host}"\n' if self.migration_host else ""
        (self.dir / "etc/qemu.conf").write_text(QEMU_CONF + migration)
        mounts = [(self.dir / name, target) for name, target in _MOUNTS] + [(self.cache, _CACHE_TARGET)]
        return mounts + self._accounts()

    def _accounts(self) -> list[tuple[Path, str]]:
        """Copies of /etc/passwd and /etc/group that add what of user and group libvirt-qemu is missing."""
        uid = _unused_id()
        wanted = {"passwd": (_has_user, f"{QEMU_USER}:x:{uid}:{uid}:libvirt:/nonexistent:/usr/sbin/nologin"),
                  "group": (_has_group, f"{QEMU_USER}:x:{uid}:")}
        mounts = []
        for name, (present, entry) in wanted.items():
            if present():
                continue
            copy = self.dir / "accounts" / name
            copy.parent.mkdir(exist_ok=True)
            copy.write_text(Path(f"/etc/{name}").read_text().rstrip("\n") + f"\n{entry}\n")
            mounts.append((copy, f"/etc/{name}"))
        return mounts

    def _wait_until_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise LabError(f"libvirtd in namespace '{self.netns}' exited during start-up; end of "
                               f"{self.log}:\n{_tail(self.log)}")
            if _accepts(self.socket):
                try:
                    connection = connect(self.uri)
                    try:
                        connection.getCapabilities()
                        return
                    finally:
                        connection.close()
                except libvirt.libvirtError:
                    pass  # still initializing its drivers
            if time.monotonic() > deadline:
                raise LabError(f"libvirtd in namespace '{self.netns}' did not answer within {timeout:g} s; "
                               f"end of {self.log}:\n{_tail(self.log)}")
            time.sleep(0.05)

    def _leftover(self) -> int | None:
        """The daemon a pidfile in ``dir`` names, if it still runs: its reaper (the group leader) if that
        runs too, else libvirtd."""
        pid = _read_pid(self.dir / _PIDFILE)
        if pid is None or not self._owns(pid):
            return None
        try:
            leader = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return leader if self._owns(leader) else pid

    def _owns(self, pid: int) -> bool:
        """Whether ``pid`` runs in this daemon's mount namespace (sees ``dir/run`` as its /run)."""
        try:
            theirs = os.stat(f"/proc/{pid}/root/run")
            ours = os.stat(self.dir / "run")
        except OSError:
            return False
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _kill(pid: int, started: int | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL, one process (a QEMU leads its own session, not our process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not processes.is_alive(pid, started):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        processes.wait_gone(pid, started, timeout)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _script(mounts: list[tuple[Path, str]]) -> str:
    """The shell that bind-mounts ``mounts`` and execs libvirtd (so the PID spawned is the daemon's). A mount
    point missing on the machine is made, empty: Debian's libvirt-daemon package alone has no /etc/libvirt
    (libvirt-daemon-system, which the lab does not install, would ship it)."""
    lines = ["set -e"]
    for source, target in mounts:
        if source.is_dir():
            lines.append(f"mkdir -p {target}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {target}")
    lines.append(f"exec {LIBVIRTD} --config /etc/libvirt/libvirtd.conf --pid-file /{_PIDFILE}")
    return "\n".join(lines)


def _has_user() -> bool:
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return False
    return True


def _has_group() -> bool:
    try:
        grp.getgrnam(QEMU_USER)
    except KeyError:
        return False
    return True


def _unused_id(first: int = 64055) -> int:
    """A number that is neither a user's nor a group's id on this machine."""
    candidate = first
    while True:
        try:
            pwd.getpwuid(candidate)
        except KeyError:
            try:
                grp.getgrgid(candidate)
            except KeyError:
                return candidate
        candidate += 1


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
