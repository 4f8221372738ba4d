"""A private OVN central per test, for the network backend tests."""

from __future__ import annotations

from typing import Iterator

import pytest

from ovn import OvnCentral


@pytest.fixture
def ovn(tmp_path) -> Iterator[OvnCentral]:
    central = OvnCentral(tmp_path / "ovn").start()
    try:
        yield central
    finally:
        central.stop()
