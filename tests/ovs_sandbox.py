"""A private Open vSwitch for tests and benchmarks: ovsdb-server + ovs-vswitchd in a temporary directory.

    with OvsSandbox().start() as ovs:        # raises OvsUnavailable if OVS is not installed
        ovs.db                               # "unix:/tmp/dpustack-ovs-.../db.sock"
        ovs.vsctl("show")                    # ovs-vsctl against this database
        ovs.restart_ovsdb(down_for=1.0)      # the database server goes away and comes back
        ovs.in_netns("ip", "link")           # a command in ovs-vswitchd's network namespace
    # both daemons stopped by PID, directory removed

ovs-vswitchd runs the userspace datapath (``--disable-system``: no kernel
module needed) inside a network namespace of its own (``unshare --net``), so
the tap devices it creates for bridges never appear in, or collide with, the
host's namespace (other tests and labs may run bridges called ``br-int`` at
the same time). The namespace dies with the daemon. :meth:`OvsSandbox.in_netns`
runs a command inside it.

``OvsSandbox(netns="dpt-1a2b3c-dpu")`` starts ovs-vswitchd in that existing
named namespace instead (``ip netns exec``), as a lab DPU runs it: it can
then open the representors the lab function driver puts there. The caller
owns the namespace and deletes it after :meth:`OvsSandbox.stop`.

This module is named ``ovs_sandbox`` and not ``ovs`` on purpose: the tests
directory is on ``sys.path``, and a ``tests/ovs.py`` would hide the python-ovs
package (``ovs``) that ovsdbapp imports. It has no pytest dependency, so
``bench/`` uses it too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["OvsSandbox", "OvsUnavailable"]

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
_PROGRAMS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "unshare", "ip")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes


class OvsUnavailable(RuntimeError):
    """Open vSwitch (or its schema) is not installed here."""


def _find_programs() -> None:
    missing = [p for p in _PROGRAMS if shutil.which(p, path=_path()) is None]
    if missing or not SCHEMA.exists():
        what = ", ".join(missing + ([] if SCHEMA.exists() else [str(SCHEMA)]))
        raise OvsUnavailable(f"Open vSwitch is not installed (missing: {what}); install the Debian "
                             f"package 'openvswitch-switch' (`make sysdeps` as root does it)")


def _path() -> str:
    # ovsdb-server and ovs-vswitchd live in /usr/sbin, which a user's PATH may lack
    return os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


class OvsSandbox:
    """A running private OVS: ``db`` is the OVSDB connection string. Use :meth:`start`, always :meth:`stop`."""

    def __init__(self, basedir: Path | None = None, *, netns: str | None = None):
        if basedir is None:
            root = tempfile.gettempdir()
            if len(os.path.join(root, "dpustack-ovs-xxxxxxxx", "vswitchd.ctl")) > _SOCKET_PATH_MAX:
                root = "/tmp"
            basedir = Path(tempfile.mkdtemp(prefix="dpustack-ovs-", dir=root))
            self._owns_dir = True
        else:
            basedir.mkdir(parents=True, exist_ok=True)
            self._owns_dir = False
        self.dir = basedir
        self.netns = netns  # None: a private namespace made with unshare
        self.db_file = basedir / "conf.db"
        self.socket = basedir / "db.sock"
        self.db = f"unix:{self.socket}"
        self.env = {**os.environ, "PATH": _path(), "OVS_RUNDIR": str(basedir),
                    "OVS_LOGDIR": str(basedir), "OVS_DBDIR": str(basedir)}
        self._stopped = False

    # ------------------------------------------------------------------ start
    def start(self) -> "OvsSandbox":
        """Create the database, start both daemons and initialise the root record."""
        _find_programs()
        atexit.register(self.stop)
        try:
            self._run("ovsdb-tool", "create", str(self.db_file), str(SCHEMA))
            self.start_ovsdb()
            self.vsctl("--no-wait", "init")
            launcher = ("unshare", "--net") if self.netns is None else ("ip", "netns", "exec", self.netns)
            self._run(*launcher, "ovs-vswitchd", self.db,
                      *self._daemon_options("ovs-vswitchd", "vswitchd.ctl"), "--disable-system")
        except BaseException:
            self.stop()
            raise
        return self

    def start_ovsdb(self) -> None:
        """Start ovsdb-server on the existing database file."""
        self._run("ovsdb-server", str(self.db_file), f"--remote=punix:{self.socket}",
                  *self._daemon_options("ovsdb-server", "ovsdb.ctl"))

    def _daemon_options(self, program: str, unixctl: str) -> list[str]:
        return [f"--pidfile={self.dir / f'{program}.pid'}", f"--unixctl={self.dir / unixctl}",
                f"--log-file={self.dir / f'{program}.log'}", "--detach"]

    def _run(self, *args: str, timeout: float = 30) -> str:
        proc = subprocess.run(args, env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}{self._log_tails()}")
        return proc.stdout

    def _log_tails(self) -> str:
        tails = []
        for log in sorted(self.dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-10:]
            tails.append(f"\n--- {log.name} ---\n" + "\n".join(lines))
        return "".join(tails)

    # ------------------------------------------------------------- commands
    def vsctl(self, *args: str) -> str:
        """Run ovs-vsctl against this database; its output without the trailing newline."""
        return self._run("ovs-vsctl", f"--db={self.db}", "--timeout=20", *args).rstrip("\n")

    def in_netns(self, *args: str, timeout: float = 30) -> str:
        """Run a command inside ovs-vswitchd's network namespace (where its ports live)."""
        pid = self.pid("ovs-vswitchd")
        if pid is None:
            raise RuntimeError("ovs-vswitchd is not running")
        return self._run("nsenter", f"--net=/proc/{pid}/ns/net", *args, timeout=timeout)

    def transactions(self, comment: str) -> int:
        """How many committed database transactions carry a comment containing ``comment``."""
        log = self._run("ovsdb-tool", "show-log", str(self.db_file))
        return sum(1 for line in log.splitlines() if line.startswith("record") and comment in line)

    # --------------------------------------------------------- ovsdb-server
    def stop_ovsdb(self) -> None:
        """Stop ovsdb-server only (ovs-vswitchd and clients lose their connection and retry)."""
        self._kill("ovsdb-server")

    def restart_ovsdb(self, *, down_for: float = 0.0, lose_database: bool = False) -> None:
        """Stop ovsdb-server, wait ``down_for`` seconds, start it again.

        With ``lose_database`` it comes back on a new, initialised but empty
        database, as after a SoC reboot with the database on tmpfs.
        """
        self.stop_ovsdb()
        time.sleep(down_for)
        if lose_database:
            self.db_file.unlink()
            self._run("ovsdb-tool", "create", str(self.db_file), str(SCHEMA))
        self.start_ovsdb()
        if lose_database:
            self.vsctl("--no-wait", "init")

    # ------------------------------------------------------------------ stop
    def pid(self, program: str) -> int | None:
        """PID of a running daemon of this sandbox (``ovsdb-server`` or ``ovs-vswitchd``), else None."""
        try:
            pid = int((self.dir / f"{program}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """The process is alive and was started with this sandbox's directory (not a recycled PID)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z" and str(self.dir).encode() in cmdline

    def _kill(self, program: str) -> None:
        pid = self.pid(program)
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._is_ours(pid):  # gone, or a zombie waiting for init to reap it
                    return
                time.sleep(0.02)
        raise RuntimeError(f"{program} (pid {pid}) did not stop")

    def stop(self) -> None:
        """Stop both daemons by PID and remove the directory. Idempotent; also runs at exit."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._kill("ovs-vswitchd")
        finally:
            try:
                self._kill("ovsdb-server")
            finally:
                if self._owns_dir:
                    shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "OvsSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<OvsSandbox {self.dir}>"
