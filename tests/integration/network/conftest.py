"""A private OVN central per test, and a controller (one in-process agent) writing to it."""

from __future__ import annotations

from typing import Iterator

import pytest

from harness import Cloud
from ovn import OvnCentral


@pytest.fixture
def ovn(tmp_path) -> Iterator[OvnCentral]:
    central = OvnCentral(tmp_path / "ovn").start()
    try:
        yield central
    finally:
        central.stop()


@pytest.fixture
def cloud(tmp_path, ovn) -> Iterator[Cloud]:
    lab = Cloud(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", nodes=1, ovn_nb=ovn.nb, ovn_timeout=3)
    try:
        yield lab
    finally:
        lab.close()
