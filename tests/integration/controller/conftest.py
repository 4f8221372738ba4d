"""Controller tests run the real controller (on SQLite and on PostgreSQL) with in-process agents."""

from __future__ import annotations

from typing import Iterator

import pytest

import moves
from harness import Cloud


@pytest.fixture
def cloud(request, tmp_path, database_url) -> Iterator[Cloud]:
    lab = Cloud(tmp_path, database_url, nodes=request.param if hasattr(request, "param") else 2)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def mixed_cloud(cloud):
    """Two bare-metal and two vm nodes, flavors of both types, an image, a network and a data volume
    (`moves.mix`)."""
    return moves.mix(cloud)
