"""Throwaway PostgreSQL clusters (and other small helpers) for the test suite.

``PgCluster`` runs ``initdb`` in a fresh temporary directory and starts a
server that listens only on a unix socket inside that directory (no TCP at
all, trust authentication, fsync off).  PostgreSQL refuses to run as root, so
when the tests run as root the server programs are run as the ``postgres``
system user (or ``nobody`` if there is no such user) and the directory is
handed over to that user.

    cluster = PgCluster.start()          # raises PgUnavailable if no initdb
    url = cluster.create_database()      # "postgresql+psycopg://..."
    cluster.drop_database(url)
    cluster.stop()                       # idempotent; also runs at exit

This module has no pytest dependency so it can be used from scripts too.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

__all__ = ["PgCluster", "PgUnavailable", "find_pg_bindir", "free_port"]

_SUPERUSER = "postgres"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for the NUL


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries (initdb/pg_ctl) could be found."""


def _version_key(path: str) -> tuple:
    name = os.path.basename(os.path.dirname(path.rstrip("/")))
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.]", name))


def find_pg_bindir() -> Path:
    """Directory holding initdb, pg_ctl and postgres.

    Prefers the newest /usr/lib/postgresql/<version>/bin (the Debian layout,
    where these programs are not on PATH), then falls back to PATH.
    $DPUSTACK_PG_BINDIR overrides the search.
    """
    override = os.environ.get("DPUSTACK_PG_BINDIR")
    if override:
        if not os.access(os.path.join(override, "initdb"), os.X_OK):
            raise PgUnavailable(f"DPUSTACK_PG_BINDIR={override} has no executable initdb")
        return Path(override)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/"), key=_version_key, reverse=True
    )
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, p), os.X_OK) for p in ("initdb", "pg_ctl", "postgres")):
            return Path(bindir)
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(os.path.realpath(initdb)).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    raise PgUnavailable(
        "PostgreSQL server binaries not found (no initdb/pg_ctl in "
        "/usr/lib/postgresql/*/bin or on PATH); install the Debian package "
        "'postgresql' (`make sysdeps` as root does it)"
    )


_given_ports: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now.

    Ports are never handed out twice in one process, so two servers started by
    the same test cannot be given the same port.  There is still the usual
    race with unrelated processes between this call and the caller's bind().
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("could not find a free TCP port")


def _pick_run_user() -> pwd.struct_passwd | None:
    """The account to run the server programs as, or None for 'as myself'."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PgCluster:
    """A running throwaway PostgreSQL cluster. Use :meth:`start`."""

    def __init__(self, bindir: Path, basedir: Path, port: int, run_as: pwd.struct_passwd | None):
        self.bindir = bindir
        self.basedir = basedir            # temp dir; also the unix socket directory
        self.datadir = basedir / "data"
        self.logfile = basedir / "postgresql.log"
        self.socket_dir = str(basedir)
        self.port = port
        self.user = _SUPERUSER            # database superuser to connect as
        self.run_as = run_as
        self._counter = itertools.count(1)
        self._stopped = False

    # ----------------------------------------------------------------- start
    @classmethod
    def start(cls, *, bindir: Path | None = None, port: int = 5432, timeout: int = 60) -> "PgCluster":
        bindir = bindir or find_pg_bindir()
        run_as = _pick_run_user()

        tmproot = tempfile.gettempdir()
        if len(os.path.join(tmproot, "dpustack-pg-xxxxxxxx", f".s.PGSQL.{port}.lock")) > _SOCKET_PATH_MAX:
            tmproot = "/tmp"  # unix socket paths are short; a long $TMPDIR would break them
        basedir = Path(tempfile.mkdtemp(prefix="dpustack-pg-", dir=tmproot))
        cluster = cls(bindir, basedir, port, run_as)
        try:
            if run_as is not None:
                os.chown(basedir, run_as.pw_uid, run_as.pw_gid)
            cluster._run(
                "initdb", "-D", str(cluster.datadir), "-U", _SUPERUSER, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )
            with open(cluster.datadir / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# dpustack test cluster\n"
                    "listen_addresses = ''\n"
                    f"unix_socket_directories = '{cluster.socket_dir}'\n"
                    f"port = {port}\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "max_connections = 300\n"
                    "shared_buffers = 32MB\n"
                    "log_min_messages = warning\n"
                )
            cluster._run(
                "pg_ctl", "start", "-w", "-t", str(timeout),
                "-D", str(cluster.datadir), "-l", str(cluster.logfile),
                timeout=timeout + 30,
            )
        except BaseException:
            cluster.stop()
            raise
        atexit.register(cluster.stop)
        return cluster

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / program), *args]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C", "LC_ALL": "C", "TZ": "UTC",
        }
        kwargs: dict = {}
        if self.run_as is not None:
            kwargs = dict(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
            env["HOME"] = str(self.basedir)
            env["USER"] = env["LOGNAME"] = self.run_as.pw_name
        # Output goes to a file, not a pipe: the postmaster started by pg_ctl
        # must not inherit a pipe we would wait on.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.basedir, env=env, timeout=timeout, **kwargs,
            )
            if proc.returncode != 0:
                out.seek(0)
                output = out.read().decode(errors="replace")
                log = ""
                if self.logfile.exists():
                    log = "\n--- server log ---\n" + self.logfile.read_text(errors="replace")[-4000:]
                raise RuntimeError(
                    f"{' '.join(cmd)} failed with exit status {proc.returncode}:\n{output}{log}"
                )

    # ------------------------------------------------------------- databases
    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of database ``dbname``."""
        return (
            f"postgresql+psycopg://{quote(self.user)}@/{quote(dbname)}"
            f"?host={quote(self.socket_dir, safe='/')}&port={self.port}"
        )

    def _admin_connect(self):
        import psycopg

        return psycopg.connect(
            host=self.socket_dir, port=self.port, user=self.user, dbname="postgres",
            autocommit=True, connect_timeout=10,
        )

    def create_database(self, prefix: str = "t") -> str:
        """Create a new, empty database and return its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._counter)}_{uuid.uuid4().hex[:8]}"
        with self._admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url_or_name: str) -> None:
        """Drop a database made by :meth:`create_database`, closing its connections."""
        name = url_or_name
        if "://" in url_or_name:
            name = url_or_name.split("@/", 1)[1].split("?", 1)[0]
        name = name.replace('"', '""')
        with self._admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ------------------------------------------------------------------ stop
    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete the directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.datadir / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-t", "30",
                              "-D", str(self.datadir), timeout=60)
                except Exception:
                    pid = self._postmaster_pid()
                    if pid:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        for _ in range(100):
                            try:
                                os.kill(pid, 0)
                            except ProcessLookupError:
                                break
                            time.sleep(0.05)
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PgCluster {self.socket_dir} port={self.port}>"
