"""The agent.toml of each emulated bare-metal node (memory drivers, memory BMC)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

NODE_CPU = 64
NODE_MEM_MIB = 262144
REPORT_INTERVAL = 2


@dataclass
class AgentSpec:
    """Where one lab agent lives and how it reaches the controller."""

    hostname: str
    port: int
    node_dir: Path
    controller_url: str
    controller_token: str  # the agent-role token this agent reports with
    api_token: str  # the controller's agent credential, accepted by this agent's API

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.node_dir / "agent.toml"


def _q(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML escapes)."""
    return json.dumps(value)


def render_config(spec: AgentSpec, serial: str) -> str:
    """The TOML text; the BMC password is random and lives only in this file."""
    state = spec.node_dir / "state"
    return "\n".join([
        f"hostname = {_q(spec.hostname)}",
        'node_type = "bm"',
        'dpu_model = "BF2"',
        f"bind = {_q(f'127.0.0.1:{spec.port}')}",
        f"advertise_url = {_q(spec.url)}",
        f"state_dir = {_q(str(state))}",
        f"report_interval = {REPORT_INTERVAL}",
        'bridge = "br-int"',
        "",
        "[controller]",
        f"url = {_q(spec.controller_url)}",
        f"token = {_q(spec.controller_token)}",
        "",
        "[api]",
        f"token = {_q(spec.api_token)}",
        "",
        "[drivers]",
        'functions = "memory"',
        'switch = "memory"',
        'storage = "memory"',
        'bmc = "memory"',
        "",
        "[bmc]",
        f"address = {_q(f'bmc.{spec.hostname}.lab')}",
        'username = "admin"',
        f"password = {_q(secrets.token_urlsafe(16))}",
        "",
        "[bmc.memory]",
        f"cpu = {NODE_CPU}",
        f"mem = {NODE_MEM_MIB}",
        f"serial_number = {_q(serial)}",
        'model = "dpustack lab BM host"',
        f"state_file = {_q(str(state / 'bmc.json'))}",
        "",
    ])


def write_config(spec: AgentSpec, serial: str) -> Path:
    """Write the node's agent.toml (mode 0600: it holds tokens and the BMC password)."""
    (spec.node_dir / "state").mkdir(parents=True, exist_ok=True)
    fd = os.open(spec.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render_config(spec, serial))
    return spec.config_path
