"""BMC emulators for tests, each a real process started through dpustack.lab.bmcs.

* ``redfish_bmc``: sushy-tools' emulator over libvirt ``test:///default`` (one
  domain ``test``: 2 vCPUs, 8 GiB, running at start; power changes apply at once).
* ``terse_redfish_bmc``: the same with the "minimum" feature set: no processors,
  memory, chassis or managers.
* ``ipmi_bmc``: dpustack's pyghmi BMC, host off at start, FRU describing a
  "Dell Inc. PowerEdge R760" with serial ``SN-IPMI-0042``.
* ``late_ipmi_bmc``: the same, applying every power change one second late.

Import the fixtures a module needs (``from bmc import redfish_bmc  # noqa: F401``).
Each starts once per module and is stopped by PID at its end; teardown fails if
the process is still alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dpustack.secrets import digest
from dpustack.lab import bmcs
from dpustack.lab.bmcs import EmulatedBmc

IPMI_SERIAL = "SN-IPMI-0042"
IPMI_MANUFACTURER = "Dell Inc."
IPMI_PRODUCT = "PowerEdge R760"
LATE_SECONDS = 1.0


@contextmanager
def running(bmc: EmulatedBmc) -> Iterator[EmulatedBmc]:
    """Yield a started emulator; stop it by PID afterwards and make sure it is gone."""
    try:
        yield bmc
    finally:
        bmc.stop()
        assert not bmc.alive, f"the {bmc.kind} BMC emulator (pid {bmc.pid}) outlived its test"


def log_lines(bmc: EmulatedBmc) -> list[str]:
    """What the emulator has logged so far (the IPMI BMC logs every chassis control it obeys)."""
    return Path(bmc.log).read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def redfish_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedBmc]:
    with running(bmcs.start_redfish(tmp_path_factory.mktemp("redfish-bmc"))) as bmc:
        yield bmc


@pytest.fixture(scope="module")
def terse_redfish_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedBmc]:
    with running(bmcs.start_redfish(tmp_path_factory.mktemp("terse-redfish-bmc"), feature_set="minimum")) as bmc:
        yield bmc


def _start_ipmi(tmp_path_factory: pytest.TempPathFactory, name: str, **options) -> EmulatedBmc:
    return bmcs.start_ipmi(tmp_path_factory.mktemp(name), serial=IPMI_SERIAL, manufacturer=IPMI_MANUFACTURER,
                           product=IPMI_PRODUCT, **options)


@pytest.fixture(scope="module")
def ipmi_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedBmc]:
    with running(_start_ipmi(tmp_path_factory, "ipmi-bmc")) as bmc:
        yield bmc


@pytest.fixture(scope="module")
def late_ipmi_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedBmc]:
    with running(_start_ipmi(tmp_path_factory, "late-ipmi-bmc", delay=LATE_SECONDS)) as bmc:
        yield bmc


API_TOKEN = "controller-to-agent-secret"


@contextmanager
def agent_app(state_dir: Path, drivers: dict, bmc: dict) -> Iterator:
    """An agent app (memory drivers but the BMC) whose drivers are built from its config, as
    ``dpustack-agent`` builds them; yields a TestClient that sends the controller's token."""
    import warnings

    from dpustack.agent.app import create_app
    from dpustack.agent.config import parse_config
    from dpustack.agent.hardware import load_drivers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette warns about its httpx-based TestClient
        from fastapi.testclient import TestClient

    config = parse_config({"hostname": "dpu-bmc-1", "state_dir": str(state_dir),
                           "controller": {"url": "http://127.0.0.1:9", "token": "agent-role-token"},
                           "insecure": True,
                           "api": {"controller_credential_sha256": digest(API_TOKEN)}, "drivers": drivers, "bmc": bmc})
    app = create_app(config, drivers=load_drivers(config), start_background=False)
    with TestClient(app, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client
