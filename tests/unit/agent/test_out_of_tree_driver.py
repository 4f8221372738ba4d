"""A driver from outside dpustack: one module plus one entry point, loaded by the agent with its options.

The distribution is written into a temporary directory put on ``sys.path``
(a module and a ``.dist-info`` with ``METADATA`` and ``entry_points.txt``), as
pip would install it; nothing in dpustack names it.
"""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from dpustack.agent.app import create_app
from dpustack.agent.config import load_config
from dpustack.agent.hardware import load_drivers
from dpustack.drivers.registry import available
from dpustack.drivers.switch import SwitchDriver
from dpustack.errors import InvalidInput

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns about its httpx-based TestClient
    from fastapi.testclient import TestClient

MODULE = "acme_fabric_switch"

PLUGIN = '''
"""An ACME fabric switch: the memory switch, told which fabric and how long to wait."""

from pydantic import Field, PositiveFloat

from dpustack.drivers.options import DriverOptions, StatePath
from dpustack.drivers.switch.memory import MemorySwitchDriver


class AcmeOptions(DriverOptions):
    fabric: str = Field(pattern=r"^[a-z]+$")
    timeout: PositiveFloat = 5.0
    journal: StatePath = Field("acme.journal", validate_default=True)


class AcmeSwitchDriver(MemorySwitchDriver):
    options = AcmeOptions

    def __init__(self, fabric, timeout=5.0, journal=None):
        super().__init__()
        self.fabric, self.timeout, self.journal = fabric, timeout, journal
        self.closed = 0

    def close(self):
        self.closed += 1
'''

AGENT_TOML = """
state_dir = "{state_dir}"
insecure = true

[controller]
url = "http://127.0.0.1:9"
token = "agent-role-token"

[api]
controller_credential_sha256 = "c1642e5b544401b66b42479ef55919b9a732591acdc91090cd56e709e32afbd8"

[drivers]
switch = "acme"

[switch.acme]
fabric = "blue"
timeout = 2.5
"""


@pytest.fixture
def acme_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The acme-fabric distribution, installed in a directory of its own on sys.path."""
    site = tmp_path / "site-packages"
    info = site / "acme_fabric-1.0.dist-info"
    info.mkdir(parents=True)
    (site / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-fabric\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[dpustack.drivers.switch]\nacme = {MODULE}:AcmeSwitchDriver\n")
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import and metadata caches
    yield
    sys.modules.pop(MODULE, None)


def _config(tmp_path: Path, text: str = AGENT_TOML):
    path = tmp_path / "agent.toml"
    path.write_text(text.format(state_dir=tmp_path / "state"))
    return load_config(path)


def test_an_installed_driver_is_found_by_its_entry_point(acme_installed):
    assert "acme" in available(SwitchDriver)


def test_the_agent_loads_it_with_its_options_and_closes_it_when_it_stops(acme_installed, tmp_path):
    app = create_app(_config(tmp_path), start_background=False)
    switch = app.state.service.drivers.switch

    assert type(switch).__module__ == MODULE
    assert (switch.fabric, switch.timeout) == ("blue", 2.5)
    assert switch.journal == tmp_path / "state" / "acme.journal"  # a relative StatePath: under state_dir
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert switch.closed == 0
    assert switch.closed == 1


def test_load_drivers_gives_it_what_the_table_sets(acme_installed, tmp_path):
    drivers = load_drivers(_config(tmp_path, AGENT_TOML.replace("timeout = 2.5\n", 'journal = "/var/log/acme"\n')))

    assert (drivers.switch.fabric, drivers.switch.timeout, drivers.switch.journal) == (
        "blue", 5.0, Path("/var/log/acme"))


def _refusal(tmp_path: Path, text: str) -> InvalidInput:
    """The error loading ``text`` as agent.toml fails with."""
    with pytest.raises(InvalidInput) as caught:
        _config(tmp_path, text)
    return caught.value


@pytest.mark.parametrize("old, new, field", [
    ("timeout = 2.5", "timeout = 0", "switch.acme.timeout"),
    ('fabric = "blue"', 'fabric = "Blue 2"', "switch.acme.fabric"),
    ('fabric = "blue"', 'fabric = "blue"\ncolour = "red"', "switch.acme.colour"),
    ('fabric = "blue"\n', "", "switch.acme.fabric"),
    ("[drivers]", '[switch.acne]\nfabric = "red"\n\n[drivers]', "switch.acne"),  # no such driver
])
def test_a_bad_option_is_named_interface_implementation_field(acme_installed, tmp_path, old, new, field):
    refusal = _refusal(tmp_path, AGENT_TOML.replace(old, new, 1))

    assert refusal.field == field
    assert refusal.message.startswith(f"{tmp_path / 'agent.toml'}: {field}: ")


def test_its_table_is_required_when_it_has_required_options(acme_installed, tmp_path):
    refusal = _refusal(tmp_path, AGENT_TOML.split("[switch.acme]")[0])

    assert refusal.field == "switch.acme"
    assert 'required when [drivers] switch = "acme"' in refusal.message


def test_without_the_distribution_the_agent_names_what_is_installed(tmp_path):
    refusal = _refusal(tmp_path, AGENT_TOML)

    assert refusal.field == "drivers.switch"
    assert "no switch driver named 'acme' (installed: memory, ovs)" in refusal.message
