"""A private OVN central for tests: northbound and southbound ovsdb-servers and ovn-northd."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class OvnCentral:
    """Start with `start()`, always `stop()`; `nb` is the northbound connection string."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nb = f"unix:{self.dir / 'nb.sock'}"
        self.sb = f"unix:{self.dir / 'sb.sock'}"
        self.env = {**os.environ, "OVS_RUNDIR": str(self.dir), "OVS_LOGDIR": str(self.dir),
                    "OVS_DBDIR": str(self.dir), "OVN_RUNDIR": str(self.dir), "OVN_LOGDIR": str(self.dir)}
        self._pidfiles: list[Path] = []

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, env=self.env, capture_output=True, timeout=30)

    def _db(self, name: str, schema: str) -> None:
        db = self.dir / f"{name}.db"
        self._run("ovsdb-tool", "create", str(db), f"/usr/share/ovn/{schema}")
        pidfile = self.dir / f"{name}.pid"
        self._run("ovsdb-server", f"--remote=punix:{self.dir / f'{name}.sock'}", f"--pidfile={pidfile}",
                  f"--unixctl={self.dir / f'{name}.ctl'}", f"--log-file={self.dir / f'{name}.log'}",
                  "--detach", str(db))
        self._pidfiles.append(pidfile)

    def start(self) -> "OvnCentral":
        self._db("nb", "ovn-nb.ovsschema")
        self._db("sb", "ovn-sb.ovsschema")
        pidfile = self.dir / "northd.pid"
        self._run("ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}", f"--pidfile={pidfile}",
                  f"--unixctl={self.dir / 'northd.ctl'}", f"--log-file={self.dir / 'northd.log'}", "--detach")
        self._pidfiles.append(pidfile)
        self._run("ovn-nbctl", f"--db={self.nb}", "init")
        return self

    def nbctl(self, *args: str) -> str:
        result = subprocess.run(["ovn-nbctl", f"--db={self.nb}", *args], check=True, env=self.env,
                                capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    def stop(self) -> None:
        for pidfile in reversed(self._pidfiles):
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        self._pidfiles.clear()


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
