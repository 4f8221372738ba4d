"""`node show` prints a VM node's host cells with what is free; `server show` a VM's placement."""

from __future__ import annotations

import json

import pytest
from cli_fake_api import FakeApi, Invoke

from dpustack.cli.numa import cpu_list

CELLS = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192, "used_memory_mib": 0, "pinned_cpus": [],
          "hugepages": [], "free": {"cpus": 2, "pinnable_cpus": [2, 3], "memory_mib": 7168, "hugepages": []}},
         {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192, "used_memory_mib": 2048, "pinned_cpus": [4],
          "hugepages": [{"size_kib": 2048, "total": 1024, "free": 1024}],
          "dedicated_cpus": [6, 7], "free": {"cpus": 1, "pinnable_cpus": [6, 7], "memory_mib": 4096,
                   "hugepages": [{"size_kib": 2048, "free": 512}]}}]


@pytest.mark.parametrize("cpus, text", [([], "none"), ([3], "3"), ([0, 1, 2, 5], "0-2,5"),
                                        ([7, 4, 5, 9, 10], "4-5,7,9-10")])
def test_cpu_lists_are_written_as_ranges(cpus, text):
    assert cpu_list(cpus) == text


def test_node_show_prints_one_line_per_cell_with_what_is_free(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("nodes", hostname="dpu-vm-1", status="up", ready=True, node_type="vm", numa_cells=CELLS,
             instances=[])

    result = dpustack("node", "show", "dpu-vm-1")

    assert result.exit_code == 0, result.output
    assert "cell 0: CPUs 0-3, 2 free (pinnable 2-3); 8192 MiB, 7168 free" in result.stdout
    assert ("cell 1: CPUs 4-7 (dedicated 6-7), 1 free (pinnable 6-7); 8192 MiB, 4096 free; 2048 KiB pages "
            "512/1024 free") in result.stdout
    assert json.loads(dpustack("node", "show", "dpu-vm-1", "-f", "json").stdout)["numa_cells"] == CELLS


def test_node_list_and_show_keep_working_for_a_node_without_cells(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("nodes", hostname="dpu-bm-1", status="up", ready=True, node_type="bm", total_cpu=64, claimed_cpu=0,
             numa_cells=[], instances=[])

    assert "dpu-bm-1" in dpustack("node", "list").stdout
    shown = dpustack("node", "show", "dpu-bm-1")
    assert shown.exit_code == 0 and "numa_cells" in shown.stdout and "cell 0" not in shown.stdout


def test_node_list_and_show_say_why_a_node_is_not_ready(dpustack: Invoke, fake: FakeApi) -> None:
    reason = "its host's NUMA cells are not usable: CPU 3 is in cells 0 and 1"
    fake.add("nodes", hostname="dpu-vm-2", status="up", ready=False, not_ready_reason=reason, node_type="vm",
             numa_cells=[], instances=[])

    assert f"False ({reason})" in dpustack("node", "list").stdout
    assert f"False ({reason})" in " ".join(dpustack("node", "show", "dpu-vm-2").stdout.split())


def test_server_show_prints_the_host_cells_and_pinned_cpus(dpustack: Invoke, fake: FakeApi) -> None:
    placement = {"pinned": True, "page_size_kib": 2048, "cells": [
        {"guest_cell": 0, "host_cell": 1, "vcpus": [0, 1], "host_cpus": [6, 7], "memory_mib": 1024}]}
    fake.add("instances", name="v1", status="ACTIVE", node="dpu-vm-1", numa_placement=placement)
    fake.add("instances", name="v2", status="ACTIVE", node="dpu-vm-1", numa_placement={"pinned": False, "cells": [
        {"guest_cell": 0, "host_cell": 0, "vcpus": [0, 1, 2], "host_cpus": [0, 1, 2, 3], "memory_mib": 2048}]})

    pinned, shared = dpustack("server", "show", "v1"), dpustack("server", "show", "v2")

    assert pinned.exit_code == 0, pinned.output
    assert ("guest cell 0 on host cell 1: vCPU 0 on CPU 6, vCPU 1 on CPU 7 (pinned); 1024 MiB in 2048 KiB pages"
            in pinned.stdout)
    assert "guest cell 0 on host cell 0: vCPUs 0-2 on CPUs 0-3 (shared); 2048 MiB" in shared.stdout
