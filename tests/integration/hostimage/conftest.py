"""One host image per session, and one guest booted from it that the tests of a module share (boots are slow
under TCG on two cores).

``booted_host`` is a :class:`host_guest.HostGuest` that has printed its ``ready`` line; what the metadata
server serves it is ``served`` (``guest_data`` unless a module overrides it). ``host_image`` and ``timings``
(the seconds measured) are session fixtures of tests/conftest.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dpustack.lab.host_image import HostImage
from guest_data import METADATA, USER_DATA
from host_guest import HostGuest, HostNetwork, host_network

READY_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def served() -> tuple[dict, bytes | None]:
    """What the metadata service serves: meta_data.json's content and user_data (None: 404); a module may
    override it."""
    return METADATA, USER_DATA


@pytest.fixture(scope="module")
def network(served: tuple[dict, bytes | None]) -> Iterator[HostNetwork]:
    with host_network(*served) as made:
        yield made


@pytest.fixture(scope="module")
def booted_host(request: pytest.FixtureRequest, host_image: HostImage, network: HostNetwork,
                timings: dict[str, float]) -> Iterator[HostGuest]:
    with HostGuest(host_image.path, network) as guest:
        guest.wait_for_step(lambda step: step["step"] == "ready", READY_TIMEOUT)
        timings[f"launch -> ready ({request.module.__name__})"] = time.monotonic() - guest.launched
        yield guest
