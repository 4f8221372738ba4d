"""agent.toml: read with tomllib, validated by pydantic when the agent starts.

A bad file fails with one message naming the field, e.g.
``agent.toml: controller.url: Field required``. Secrets are ``SecretStr`` so
they never appear in a repr or a log line.
"""

from __future__ import annotations

import logging
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, SecretStr,
                      ValidationError, field_validator, model_validator)

from dpustack.errors import InvalidInput
from dpustack.pci.device import PROPERTIES, TAGS
from dpustack.pci.pools import DEFAULT_FLAVOR_ATTRS, EXTRA_INFO
from dpustack.pci.specs import DeviceSpec, parse_information, parse_whitelist
from dpustack.secrets import SecretError, decrypt

log = logging.getLogger(__name__)

_NAME = r"^[A-Za-z0-9_.-]+$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ControllerSection(_Section):
    """How the agent reaches the controller: its URL, this node's report token, the CA that signed the
    controller's certificate (unset: the system's CAs)."""

    url: str = Field(pattern=r"^https?://")
    token: SecretStr = Field(description="the agent token issued for this node (POST /v1/nodes)")
    ca_file: Path | None = None

    @field_validator("token")
    @classmethod
    def _not_empty(cls, token: SecretStr) -> SecretStr:
        if not token.get_secret_value().strip():
            raise ValueError("must not be empty")
        return token


class ApiSection(_Section):
    """How the controller must authenticate to the agent: the SHA-256 of the credential the controller
    presents to this node (given at enrolment); the credential itself is never stored here."""

    controller_credential_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class TlsSection(_Section):
    """[tls]: the certificate (naming this node's hostname) and key the agent API is served with."""

    cert_file: Path
    key_file: Path


class DriversSection(_Section):
    """One implementation name per driver interface."""

    functions: str = Field("memory", pattern=_NAME)
    switch: str = Field("memory", pattern=_NAME)
    storage: str = Field("memory", pattern=_NAME)
    bmc: str = Field("memory", pattern=_NAME)
    inventory: str = Field("sysfs", pattern=_NAME)


class OvsSwitchSection(_Section):
    """[switch.ovs]: the DPU's OVSDB server, how long one call may take (s, including the wait for a
    restarting server), and the datapath of bridges the agent creates (``netdev``: userspace, as in
    the lab; ``system``: the kernel's)."""

    connection: str = "unix:/var/run/openvswitch/db.sock"
    timeout: PositiveFloat = 10.0
    datapath_type: Literal["netdev", "system"] = "netdev"
    # ovs-vswitchd's run directory, where its <bridge>.mgmt OpenFlow sockets are (packet-rate limits);
    # unset: the directory of a unix: connection's socket, else /var/run/openvswitch
    rundir: str | None = None

    @field_validator("connection")
    @classmethod
    def _ovsdb_remote(cls, connection: str) -> str:
        if not re.fullmatch(r"unix:/.+|tcp:[^:]+:\d{1,5}|tcp:\[[0-9A-Fa-f:.]+\]:\d{1,5}", connection):
            raise ValueError(f"'{connection}' is not an OVSDB remote such as unix:/var/run/openvswitch/db.sock "
                             f"or tcp:127.0.0.1:6640")
        return connection


class SwitchSection(_Section):
    """[switch.*]: the options of each switch implementation."""

    ovs: OvsSwitchSection = Field(default_factory=OvsSwitchSection)


class LabFunctionsSection(_Section):
    """[functions.lab]: the lab host and DPU namespaces the veth pairs join, the host NIC name
    prefix, and where storage functions are recorded (relative: under ``state_dir``)."""

    host_netns: str = Field(pattern=_NAME, max_length=255)
    dpu_netns: str = Field(pattern=_NAME, max_length=255)
    # host NICs are <prefix><slot>f<function>: 9 + len("6143f1") fits a 15-character interface name
    host_prefix: str = Field("ens", pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=9)
    state_dir: Path = Path("functions")

    @model_validator(mode="after")
    def _two_namespaces(self) -> "LabFunctionsSection":
        if self.host_netns == self.dpu_netns:
            raise InvalidInput("functions.lab.dpu_netns: must differ from host_netns", field="functions.lab.dpu_netns")
        return self


class FunctionsSection(_Section):
    """[functions.*]: the options of each function implementation; ``None`` means required when chosen."""

    lab: LabFunctionsSection | None = None


class MemoryBmcSection(_Section):
    """The host the memory BMC pretends to manage (``mem`` in MiB)."""

    cpu: PositiveInt = 64
    mem: PositiveInt = 262144
    serial_number: str = "MEM-0001"
    model: str = "Memory BM"
    console_url: str | None = None
    state_file: Path | None = None


class RedfishBmcSection(_Section):
    """[bmc.redfish]: which System, how to check TLS, how long a power change may take (s)."""

    system_id: str | None = None  # None: the first System the service lists
    verify_tls: bool | str = True  # or the path of a CA bundle
    timeout: PositiveFloat = 60.0
    request_timeout: PositiveFloat = 30.0


class IpmiBmcSection(_Section):
    """[bmc.ipmi]: the BMC's UDP port, how long a power change may take (s), and IPMI quirks."""

    port: int = Field(623, ge=1, le=65535)
    timeout: PositiveFloat = 60.0
    cipher_suite: int | None = Field(None, ge=0, le=17)  # None: ipmitool picks the best offered
    hard_reboot: Literal["reset", "cycle"] = "reset"


class HostSection(_Section):
    """[bmc.host]: the host's CPU count and memory (MiB), for BMCs that do not report them."""

    cpu: PositiveInt | None = None
    mem: PositiveInt | None = None


class BmcSection(_Section):
    """The host BMC's address and credentials, plus per-implementation options.

    The password is either ``password_encrypted`` (a token of dpustack.secrets,
    with the ``secret_key_file`` it was made with; a relative path is under
    ``state_dir``) or, for development, ``password`` in plain text.
    """

    address: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    password_encrypted: SecretStr | None = None
    secret_key_file: Path | None = None
    memory: MemoryBmcSection = Field(default_factory=MemoryBmcSection)
    redfish: RedfishBmcSection = Field(default_factory=RedfishBmcSection)
    ipmi: IpmiBmcSection = Field(default_factory=IpmiBmcSection)
    host: HostSection = Field(default_factory=HostSection)
    _login_password: SecretStr = PrivateAttr(default_factory=lambda: SecretStr(""))

    @model_validator(mode="after")
    def _one_password(self) -> "BmcSection":
        # InvalidInput passes through pydantic untouched, keeping its field
        if self.password.get_secret_value() and self.password_encrypted is not None:
            raise InvalidInput("bmc.password: give password or password_encrypted, not both", field="bmc.password")
        if self.password_encrypted is not None and self.secret_key_file is None:
            raise InvalidInput("bmc.secret_key_file: required to decrypt password_encrypted",
                               field="bmc.secret_key_file")
        if self.password.get_secret_value():
            log.warning("agent.toml: [bmc] password is stored in plain text; outside development write "
                        "password_encrypted (a dpustack.secrets token) and secret_key_file instead")
            self._login_password = self.password
        return self

    def unlock(self, state_dir: Path) -> None:
        """Decrypt ``password_encrypted`` (the key file relative to ``state_dir``)."""
        if self.password_encrypted is None or self.secret_key_file is None:
            return
        if not self.secret_key_file.is_absolute():
            self.secret_key_file = state_dir / self.secret_key_file
        try:
            plain = decrypt(self.password_encrypted.get_secret_value(), key_file=self.secret_key_file)
        except SecretError as exc:
            raise InvalidInput(f"bmc.password_encrypted: {exc.message}", field="bmc.password_encrypted") from exc
        self._login_password = SecretStr(plain)

    @property
    def login_password(self) -> SecretStr:
        """The password to log in to the BMC with, decrypted if it was given encrypted."""
        return self._login_password


class PciSection(_Section):
    """The inventory role (docs/pci.md): where to discover, which devices to offer, how to pool them."""

    root: Path = Path("/sys")
    devlink_json: Path | None = None
    flavor_attrs: list[str] = Field(default_factory=lambda: list(DEFAULT_FLAVOR_ATTRS))
    information: list[dict[str, Any]] = []
    whitelist: list[dict[str, Any]] = []
    _specs: list[DeviceSpec] = PrivateAttr(default_factory=list)

    @field_validator("flavor_attrs")
    @classmethod
    def _known_attrs(cls, attrs: list[str]) -> list[str]:
        for attr in attrs:
            if attr not in (*PROPERTIES, *TAGS, EXTRA_INFO) and not attr.startswith("e."):
                raise ValueError(f"{attr!r} is not a device property, a tag, an e.<name> extra or extra_info")
        return attrs

    @model_validator(mode="after")
    def _parse_filters(self) -> "PciSection":
        # InvalidInput passes through pydantic untouched, keeping its field (pci.information.2.match.x)
        self._specs = parse_information(self.information) + parse_whitelist(self.whitelist)
        if self.whitelist:
            log.warning("agent.toml: [[pci.whitelist]] is deprecated; write [[pci.information]] entries "
                        "with match and extra tables instead (docs/pci.md)")
        return self

    @property
    def specs(self) -> list[DeviceSpec]:
        """The device filters: the information entries, then the whitelist entries."""
        return self._specs


class MetadataSection(_Section):
    """[metadata]: answer 169.254.169.254 for this node's instances, on every network they use."""

    enabled: bool = False
    dpu_netns: str = Field("", description="the namespace of the switch's bridge; empty: the agent's own")
    namespace_prefix: str = Field("dpsmeta-", pattern=r"^[A-Za-z0-9_.-]{1,40}$",
                                  description="one namespace per network: <prefix><network id>")
    timeout: PositiveFloat = Field(10.0, description="seconds to wait for the controller's answer")


class AgentConfig(_Section):
    """The whole agent.toml."""

    hostname: str = Field(default_factory=socket.gethostname, min_length=1)
    node_type: Literal["bm", "vm"] = "bm"
    dpu_model: str = "BF2"
    bind: str = Field("127.0.0.1:8801", pattern=r"^\[?[0-9A-Za-z.:-]+\]?:\d{1,5}$")
    advertise_url: str | None = Field(None, pattern=r"^https?://")
    state_dir: Path = Path("/var/lib/dpustack-agent")
    report_interval: PositiveFloat = 5.0
    reconcile_interval: PositiveFloat = 30.0
    bridge: str = Field("br-int", pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    insecure: bool = Field(False, description="allow plain HTTP to and from the controller (warned at start)")
    controller: ControllerSection
    api: ApiSection
    tls: TlsSection | None = None
    drivers: DriversSection = Field(default_factory=DriversSection)
    functions: FunctionsSection = Field(default_factory=FunctionsSection)
    switch: SwitchSection = Field(default_factory=SwitchSection)
    bmc: BmcSection = Field(default_factory=BmcSection)
    pci: PciSection | None = None  # the inventory role runs only with a [pci] section
    metadata: MetadataSection = Field(default_factory=MetadataSection)

    @field_validator("node_type")
    @classmethod
    def _bm_only(cls, node_type: str) -> str:
        if node_type != "bm":
            raise ValueError("only 'bm' nodes are supported by this agent so far")
        return node_type

    @model_validator(mode="after")
    def _derive(self) -> "AgentConfig":
        if self.advertise_url is None:
            host = self.bind_host
            if host in ("0.0.0.0", "::", "[::]"):
                host = self.hostname
            self.advertise_url = f"{'https' if self.tls else 'http'}://{host}:{self.bind_port}"
        self._require_tls()
        self._require_chosen_options()
        state_file = self.bmc.memory.state_file
        if state_file is not None and not state_file.is_absolute():
            self.bmc.memory.state_file = self.state_dir / state_file
        if self.functions.lab is not None and not self.functions.lab.state_dir.is_absolute():
            self.functions.lab.state_dir = self.state_dir / self.functions.lab.state_dir
        self.bmc.unlock(self.state_dir)
        return self

    def _require_tls(self) -> None:
        """Plain HTTP either way only with ``insecure = true``."""
        if self.insecure:
            return
        if self.tls is None:
            raise InvalidInput("tls: required (cert_file, key_file) unless insecure = true", field="tls")
        for field, url in (("controller.url", self.controller.url), ("advertise_url", self.advertise_url or "")):
            if not url.startswith("https://"):
                raise InvalidInput(f"{field}: must be https:// unless insecure = true", field=field)

    def _require_chosen_options(self) -> None:
        """An option table without defaults ([functions.lab]) must be there when its implementation is chosen."""
        for interface in ("functions", "switch"):
            chosen = getattr(self.drivers, interface)
            options = getattr(self, interface)
            if chosen in type(options).model_fields and getattr(options, chosen) is None:
                field = f"{interface}.{chosen}"
                raise InvalidInput(f"{field}: required when [drivers] {interface} = \"{chosen}\"", field=field)

    @property
    def bind_host(self) -> str:
        return self.bind.rsplit(":", 1)[0]

    @property
    def bind_port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])


def parse_config(data: dict, *, source: str = "agent.toml") -> AgentConfig:
    """Validate a decoded agent.toml; raise InvalidInput naming the first bad field."""
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise InvalidInput(f"{source}: {field}: {first['msg']}", field=field) from exc
    except InvalidInput as exc:  # a [pci] filter entry, already named by its field
        raise InvalidInput(f"{source}: {exc.message}", field=exc.field) from exc


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent.toml file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, source=str(path))
