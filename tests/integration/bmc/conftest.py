"""The BMC emulators on a real lab host: the host image (built once a session), a capabilities cache its
libvirtds share, and the seconds measured (printed at the end of the session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dpustack.lab.host_image import HostImage, build_host_image

_timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, float]]:
    yield _timings
    if _timings:
        print("\nBMC-DOMAIN-TIMINGS " + ", ".join(f"{name}: {seconds:.2f} s" for name, seconds in _timings.items()))


@pytest.fixture(scope="session")
def host_image(tmp_path_factory: pytest.TempPathFactory) -> HostImage:
    return build_host_image(tmp_path_factory.mktemp("bmc-hostimage") / "host.img")


@pytest.fixture(scope="session")
def libvirt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QEMU's capabilities as libvirt probed them, shared by the modules' daemons (probed once, about 8 s)."""
    return tmp_path_factory.mktemp("libvirt-cache")
