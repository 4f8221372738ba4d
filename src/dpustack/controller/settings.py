"""Controller settings, read from the environment and validated at start-up."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field


def default_home() -> Path:
    return Path(os.environ.get("DPUSTACK_HOME") or Path.home() / ".local/share/dpustack")


class Settings(BaseModel):
    """Everything the controller needs to know before it serves a request."""

    home: Path = Field(default_factory=default_home)
    database_url: str = ""
    node_down_after: float = 30.0
    agent_timeout: float = 120.0
    workers: int = 4
    lease_seconds: float = 60.0
    agent_credential: str = ""
    ovn_nb: str = ""  # OVN northbound connection, e.g. "unix:/run/ovn/ovnnb_db.sock"; empty: no data plane
    ovn_timeout: float = 30.0

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        values: dict[str, object] = {}
        for field, name in (("database_url", "DPUSTACK_DATABASE_URL"),
                            ("node_down_after", "DPUSTACK_NODE_DOWN_AFTER"),
                            ("agent_timeout", "DPUSTACK_AGENT_TIMEOUT"),
                            ("workers", "DPUSTACK_WORKERS"),
                            ("lease_seconds", "DPUSTACK_LEASE_SECONDS"),
                            ("agent_credential", "DPUSTACK_AGENT_CREDENTIAL"),
                            ("ovn_nb", "DPUSTACK_OVN_NB"),
                            ("ovn_timeout", "DPUSTACK_OVN_TIMEOUT")):
            if env.get(name):
                values[field] = env[name]
        return cls(**values)  # type: ignore[arg-type]

    def prepare(self) -> "Settings":
        """Create the home directory and fill the defaults that live in it."""
        self.home.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "volumes"):
            (self.home / sub).mkdir(exist_ok=True)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'controller.db'}"
        if not self.agent_credential:
            self.agent_credential = read_or_create_secret(self.home / "agent-credential")
        return self

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def volumes_dir(self) -> Path:
        return self.home / "volumes"


def read_or_create_secret(path: Path) -> str:
    """Return the secret stored in `path`, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    write_secret(path, value)
    return value


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
