"""agent.toml: read with tomllib, validated by pydantic when the agent starts.

A bad file fails with one message naming the field, e.g.
``agent.toml: controller.url: Field required``. Secrets are ``SecretStr`` so
they never appear in a repr or a log line.
"""

from __future__ import annotations

import logging
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PrivateAttr, SecretStr,
                      ValidationError, field_validator, model_validator)

from dpustack.agent.driver_tables import DriverChoice, DriverTables
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
    """One implementation name per driver interface; ``hypervisor`` on a vm node, and only there (its
    instances are the hypervisor's domains, and its report carries the host's NUMA cells)."""

    functions: str = Field("memory", pattern=_NAME)
    switch: str = Field("memory", pattern=_NAME)
    storage: str = Field("memory", pattern=_NAME)
    bmc: str = Field("memory", pattern=_NAME)
    inventory: str = Field("sysfs", pattern=_NAME)
    hypervisor: str | None = Field(None, pattern=_NAME)


class BmcSection(_Section):
    """The host BMC's address and credentials, shared by every implementation; its sub-tables
    (``[bmc.redfish]``, ``[bmc.host]``) are driver options, checked by :class:`AgentConfig`.

    The password is either ``password_encrypted`` (a token of dpustack.secrets,
    with the ``secret_key_file`` it was made with; a relative path is under
    ``state_dir``) or, for development, ``password`` in plain text.
    """

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, dict[str, Any]]

    address: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    password_encrypted: SecretStr | None = None
    secret_key_file: Path | None = None
    _login_password: SecretStr = PrivateAttr(default_factory=lambda: SecretStr(""))

    @model_validator(mode="before")
    @classmethod
    def _tables_beside_fields(cls, data: Any) -> Any:
        for key, value in (data.items() if isinstance(data, dict) else ()):
            if key not in cls.model_fields and not isinstance(value, dict):
                raise InvalidInput(f"bmc.{key}: neither a [bmc] field nor a [bmc.<implementation>] table",
                                   field=f"bmc.{key}")
        return data

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
    """The inventory role (docs/pci.md): which devices to offer and how to pool them; its other fields
    (``root``, ``devlink_json``: where to discover) are the inventory driver's, checked by :class:`AgentConfig`."""

    model_config = ConfigDict(extra="allow")

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
    vm_stop_timeout: PositiveFloat = Field(60.0, description="vm node: seconds a stop waits for the guest to power "
                                                             "off by its power button, then pulls the plug")
    insecure: bool = Field(False, description="allow plain HTTP to and from the controller (warned at start)")
    controller: ControllerSection
    api: ApiSection
    tls: TlsSection | None = None
    drivers: DriversSection = Field(default_factory=DriversSection)
    # [<interface>.<name>]: the options of implementation <name>, declared by its driver class
    functions: dict[str, dict[str, Any]] = {}
    switch: dict[str, dict[str, Any]] = {}
    storage: dict[str, dict[str, Any]] = {}
    inventory: dict[str, dict[str, Any]] = {}
    hypervisor: dict[str, dict[str, Any]] = {}
    bmc: BmcSection = Field(default_factory=BmcSection)
    pci: PciSection | None = None  # the inventory role runs only with a [pci] section
    metadata: MetadataSection = Field(default_factory=MetadataSection)
    _drivers: dict[str, DriverChoice] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _derive(self) -> "AgentConfig":
        if self.advertise_url is None:
            host = self.bind_host
            if host in ("0.0.0.0", "::", "[::]"):
                host = self.hostname
            self.advertise_url = f"{'https' if self.tls else 'http'}://{host}:{self.bind_port}"
        self._require_tls()
        if (self.node_type == "vm") != (self.drivers.hypervisor is not None):
            raise InvalidInput("drivers.hypervisor: a vm node runs its instances through a hypervisor driver, "
                               "which a bm node has none of", field="drivers.hypervisor")
        in_use = {interface: name for interface, name in self.drivers.model_dump().items()
                  if name is not None  # no hypervisor driver unless one is named
                  and (interface != "inventory" or self.pci is not None)}  # the inventory role needs [pci]
        self._drivers = DriverTables(self, in_use, state_dir=self.state_dir).choices()
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

    @property
    def driver_choices(self) -> dict[str, DriverChoice]:
        """The implementation ``[drivers]`` names for each interface in use, with its validated options
        (the inventory is in use only with a ``[pci]`` section, the hypervisor only when named)."""
        return dict(self._drivers)

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
