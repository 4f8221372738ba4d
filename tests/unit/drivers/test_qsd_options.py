"""[storage.qsd] in agent.toml: validated as the agent validates it, errors naming the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dpustack.drivers.options import parse_options
from dpustack.drivers.storage.qsd import QsdStorageDriver, QsdStorageOptions
from dpustack.errors import InvalidInput

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def options(table: dict | None, state_dir: str = "/var/lib/dpustack-agent") -> dict:
    return parse_options(QsdStorageOptions, table, where="storage.qsd", state_dir=Path(state_dir))


def test_the_defaults_are_the_systems_daemon():
    assert options(None) == {"qmp_socket": Path("/run/qemu-storage-daemon/qmp.sock"),
                             "socket_dir": Path("/run/qemu-storage-daemon/vhost-user-blk"), "timeout": 10.0,
                             "reconnect_delay": 5}


def test_relative_paths_are_under_the_agents_state_dir():
    parsed = options({"qmp_socket": "qsd/qmp.sock", "socket_dir": "qsd/functions", "timeout": 3,
                      "reconnect_delay": 0})

    assert parsed == {"qmp_socket": Path("/var/lib/dpustack-agent/qsd/qmp.sock"),
                      "socket_dir": Path("/var/lib/dpustack-agent/qsd/functions"), "timeout": 3.0,
                      "reconnect_delay": 0}
    driver = QsdStorageDriver(**parsed)
    assert driver.socket_path("storage-vol-1") == Path("/var/lib/dpustack-agent/qsd/functions/storage-vol-1.sock")


@pytest.mark.parametrize("table, field", [
    ({"timeout": 0}, "storage.qsd.timeout"),
    ({"timeout": "soon"}, "storage.qsd.timeout"),
    ({"reconnect_delay": -1}, "storage.qsd.reconnect_delay"),
    ({"reconnect_delay": 2.5}, "storage.qsd.reconnect_delay"),
    ({"qmp_socket": "/run/" + "q" * 110}, "storage.qsd.qmp_socket"),
    ({"socket_dir": "/run/" + "d" * 100}, "storage.qsd.socket_dir"),
    ({"qmp_sock": "/run/qsd.sock"}, "storage.qsd.qmp_sock"),
])
def test_a_bad_option_names_its_field(table, field):
    with pytest.raises(InvalidInput) as caught:
        options(table)

    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")


def test_the_driver_is_registered_as_qsd():
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["dpustack.drivers.storage"]

    assert entry_points["qsd"] == f"{QsdStorageDriver.__module__}:{QsdStorageDriver.__name__}"
