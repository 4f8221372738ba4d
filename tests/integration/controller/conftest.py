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
    """Two bare-metal and two vm nodes, flavors of both types (vm.big's disk holds bm.small's boot volume),
    an image, a network and a data volume."""
    cloud.setup_basics()
    cloud.add_node(moves.VM1, vm_cells=moves.CELLS)
    cloud.add_node(moves.VM2, vm_cells=moves.CELLS)
    for name, vcpus, ram, disk in (("vm.small", 2, 1024, 1), ("vm.big", 2, 2048, 40)):
        cloud.call("POST", "/v1/flavors", {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "type": "vm"},
                   expect=201)
    cloud.volume("data1", size=1)
    return cloud
