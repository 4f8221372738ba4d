"""Controller settings, read from the environment and validated at start-up."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

VOLUME_BACKENDS = ("files", "qcow2")


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
    # A step that retries (after a live migration's switch-over) waits from step_retry_interval s, doubling,
    # for up to step_retry_seconds in all before it fails.
    step_retry_seconds: float = 600.0
    step_retry_interval: float = 1.0
    # TLS: the controller's certificate and key (served), the CA that signed the agents' certificates
    # (verified on every call to an agent); plain HTTP either way only with insecure.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    agent_ca: Path | None = None
    insecure: bool = False
    ovn_nb: str = ""  # OVN northbound connection, e.g. "unix:/run/ovn/ovnnb_db.sock"; empty: no data plane
    ovn_timeout: float = 30.0
    # Where volumes live: "files" (sparse files in the home) or "qcow2" (the storage pool in the home,
    # served by the storage node's qemu-storage-daemon: its QMP socket, and the HOST:PORT of its NBD
    # server, where it listens and the DPUs connect).
    volume_backend: str = "files"
    storage_qmp: Path | None = None
    storage_nbd: str = ""
    # Seconds between the storage reconcile's passes (every attached volume served again if it is not).
    storage_reconcile_interval: float = 30.0

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("DPUSTACK_TLS_CERT and DPUSTACK_TLS_KEY go together")
        return self

    @model_validator(mode="after")
    def _storage(self) -> "Settings":
        if self.volume_backend not in VOLUME_BACKENDS:
            raise ValueError(f"DPUSTACK_VOLUME_BACKEND must be one of {', '.join(VOLUME_BACKENDS)}, "
                             f"not {self.volume_backend!r}")
        if self.volume_backend == "qcow2":
            if self.storage_qmp is None:
                raise ValueError("DPUSTACK_VOLUME_BACKEND=qcow2 needs DPUSTACK_STORAGE_QMP: the QMP socket of the "
                                 "storage node's qemu-storage-daemon")
            if not self.storage_nbd:
                raise ValueError("DPUSTACK_VOLUME_BACKEND=qcow2 needs DPUSTACK_STORAGE_NBD: HOST:PORT where that "
                                 "daemon serves NBD to the DPUs")
        if self.storage_nbd:
            nbd_address(self.storage_nbd)
        if not self.storage_reconcile_interval > 0:
            raise ValueError("DPUSTACK_STORAGE_RECONCILE_INTERVAL must be a positive number of seconds, "
                             f"not {self.storage_reconcile_interval!r}")
        return self

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        values: dict[str, object] = {}
        for field, name in (("database_url", "DPUSTACK_DATABASE_URL"),
                            ("node_down_after", "DPUSTACK_NODE_DOWN_AFTER"),
                            ("agent_timeout", "DPUSTACK_AGENT_TIMEOUT"),
                            ("workers", "DPUSTACK_WORKERS"),
                            ("lease_seconds", "DPUSTACK_LEASE_SECONDS"),
                            ("step_retry_seconds", "DPUSTACK_STEP_RETRY_SECONDS"),
                            ("step_retry_interval", "DPUSTACK_STEP_RETRY_INTERVAL"),
                            ("tls_cert", "DPUSTACK_TLS_CERT"),
                            ("tls_key", "DPUSTACK_TLS_KEY"),
                            ("agent_ca", "DPUSTACK_AGENT_CA"),
                            ("insecure", "DPUSTACK_INSECURE"),
                            ("ovn_nb", "DPUSTACK_OVN_NB"),
                            ("ovn_timeout", "DPUSTACK_OVN_TIMEOUT"),
                            ("volume_backend", "DPUSTACK_VOLUME_BACKEND"),
                            ("storage_qmp", "DPUSTACK_STORAGE_QMP"),
                            ("storage_nbd", "DPUSTACK_STORAGE_NBD"),
                            ("storage_reconcile_interval", "DPUSTACK_STORAGE_RECONCILE_INTERVAL")):
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
        return self

    @property
    def secret_key_file(self) -> Path:
        """The controller's Fernet key (admin passwords, the credentials it presents to agents)."""
        return self.home / "secret.key"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def volumes_dir(self) -> Path:
        return self.home / "volumes"

    @property
    def storage_pool(self) -> Path:
        """The qcow2 backend's storage pool (its volumes and snapshots; images stay in `images_dir`)."""
        return self.home / "pool"


def nbd_address(value: str) -> tuple[str, int]:
    """HOST and PORT of a `HOST:PORT` (an IPv6 host in brackets); ValueError naming DPUSTACK_STORAGE_NBD."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"DPUSTACK_STORAGE_NBD must be HOST:PORT, not {value!r}")
    return host, int(port)


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
