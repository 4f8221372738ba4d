"""Throwaway network namespaces for integration tests.

``lab_namespaces`` gives a test a fresh host + DPU namespace pair, named
``dpt-<random>-host`` / ``dpt-<random>-dpu``, and deletes both afterwards
whatever happened. Import the fixture into a test module:
``from netns import lab_namespaces``. Tests skip (which fails the run unless
DPUSTACK_ALLOW_SKIPS=1) when namespaces cannot be made here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from dpustack.linux import netns

PREFIX = "dpt-"


@dataclass(frozen=True)
class LabNamespaces:
    """The two namespaces of one test: a bare-metal host and its DPU."""

    host: str
    dpu: str


def netns_unavailable() -> str | None:
    """Why this machine cannot run namespace tests, or None when it can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    missing = [tool for tool in ("ip", "ethtool", "ping") if shutil.which(tool) is None]
    if missing:
        return f"network namespace tests need {', '.join(missing)} (apt-get install iproute2 ethtool iputils-ping)"
    return None


@contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Create ``dpt-<random>-<role>`` for each role; delete them all on the way out."""
    tag = secrets.token_hex(3)
    names = {role: f"{PREFIX}{tag}-{role}" for role in roles}
    try:
        for name in names.values():
            netns.create(name)
        yield names
    finally:
        for name in names.values():
            netns.delete(name)


@pytest.fixture
def lab_namespaces() -> Iterator[LabNamespaces]:
    """A fresh host and DPU namespace, deleted after the test."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    with namespaces("host", "dpu") as names:
        yield LabNamespaces(host=names["host"], dpu=names["dpu"])
    leftovers = [name for name in names.values() if netns.exists(name)]
    assert not leftovers, f"namespaces left behind: {leftovers}"


def ip_link(namespace: str, ifname: str) -> dict[str, Any] | None:
    """``ip -j link show`` of one interface inside a namespace, None if it does not exist there."""
    done = subprocess.run(["ip", "-j", "-n", namespace, "link", "show", "dev", ifname],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[0]


def interface_names(namespace: str) -> set[str]:
    """The names of every interface inside a namespace, as ``ip`` lists them."""
    done = subprocess.run(["ip", "-j", "-n", namespace, "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(done.stdout)}


def tx_checksum_offload(namespace: str, ifname: str) -> str:
    """"on" or "off": the ``tx-checksumming`` line of ``ethtool -k`` inside a namespace."""
    features = netns.run(namespace, ["ethtool", "-k", ifname]).stdout
    line = next(line for line in features.splitlines() if line.startswith("tx-checksumming:"))
    return line.split(":", 1)[1].split()[0]
