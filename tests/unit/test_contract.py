"""The controller↔agent messages: what goes on the wire is what each side expects of the other."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dpustack.contract.instances import BuildRequest, InstanceOut, NicRequest
from dpustack.contract.node import CredentialsRotation, NodeReport
from dpustack.contract.numa import check_cells

REPORT = {"hostname": "dpu-bm-1", "ready": True, "node_type": "bm", "dpu_model": "BF2", "total_cpu": 64,
          "used_cpu": 0, "total_mem": 1024, "used_mem": 0, "agent_url": "https://dpu-bm-1:8801"}


def test_a_report_without_the_inventory_role_sends_no_pci_fields():
    report = NodeReport(**REPORT, instances=[])

    assert report.body() == {**REPORT, "instances": []}
    assert NodeReport.model_validate(report.body()).pci_devices == []  # the controller's defaults


def test_the_rotated_report_token_is_sent_as_it_is_and_masked_elsewhere():
    rotation = CredentialsRotation.model_validate({"report_token": "t" * 32,
                                                   "controller_credential_sha256": "ab" * 32})

    assert rotation.model_dump(mode="json")["report_token"] == "t" * 32
    assert "t" * 32 not in repr(rotation)


def test_a_nic_request_refuses_a_multicast_mac_on_either_side():
    with pytest.raises(ValidationError, match="multicast"):
        NicRequest(port_id="port-a", mac="01:00:5e:00:00:01")
    assert NicRequest(port_id="port-a", mac="FA-16-3E-00-00-01").mac == "fa:16:3e:00:00:01"


def test_an_instance_finds_the_nic_of_a_port():
    instance = InstanceOut.model_validate({
        "uuid": "inst-1", "name": "web", "status": "ACTIVE", "power_state": "on", "vcpus": 1, "ram": 1,
        "nics": [{"port_id": "port-a", "mac": None, "function_id": "net-port-a", "bdf": "0000:03:00.1",
                  "representor": "pf0vf0"}], "volumes": []})

    assert instance.nic("port-a").function_id == "net-port-a"
    assert instance.nic("port-b") is None


CELLS = [{"id": 0, "cpus": [0, 1], "memory_mib": 4096},
         {"id": 1, "cpus": [2, 3], "memory_mib": 4096, "used_memory_mib": 1024, "pinned_cpus": [3],
          "hugepages": [{"size_kib": 2048, "total": 8, "free": 6}]}]


def test_a_vm_report_carries_its_host_cells_and_a_bare_metal_one_defaults_to_none():
    report = NodeReport.model_validate({**REPORT, "node_type": "vm", "numa_cells": CELLS})

    assert [(c.id, c.cpus, c.pinned_cpus) for c in report.numa_cells] == [(0, [0, 1], []), (1, [2, 3], [3])]
    assert report.numa_cells[1].hugepages[0].free == 6
    assert NodeReport.model_validate(REPORT).numa_cells == []


@pytest.mark.parametrize("cells, wrong", [
    ([{**CELLS[0], "cpus": [70000]}], "CPU id 70000 is not in 0..65535"),
    ([{**CELLS[0], "memory_mib": -1}], "greater than or equal to 0"),
    ([{**CELLS[0], "id": 1024}], "less than or equal to 1023"),
])
def test_a_report_with_a_cell_field_out_of_its_range_is_refused_saying_why(cells, wrong):
    with pytest.raises(ValidationError, match=wrong) as caught:
        NodeReport.model_validate({**REPORT, "node_type": "vm", "numa_cells": cells})

    assert caught.value.errors()[0]["loc"][0] == "numa_cells"


@pytest.mark.parametrize("cells, wrong", [
    ([CELLS[0], {**CELLS[1], "id": 0}], "cell id 0 is listed twice"),
    ([CELLS[0], {**CELLS[1], "cpus": [1, 3]}], "CPU 1 is in cells 0 and 1"),
    ([{**CELLS[0], "pinned_cpus": [7]}], r"cell 0: pinned CPUs \[7\] are not among its cpus"),
    ([{**CELLS[0], "dedicated_cpus": [1, 5]}], r"cell 0: dedicated CPUs \[5\] are not among its cpus"),
    ([{**CELLS[0], "cpus": [0, 0]}], "cell 0: a CPU is listed twice in its cpus"),
    ([{**CELLS[1], "hugepages": CELLS[1]["hugepages"] * 2}], "cell 1: a huge page size is listed twice"),
    ([{**CELLS[1], "hugepages": [{"size_kib": 2048, "total": 8, "free": 9}]}],
     "cell 1: 9 free 2048 KiB pages of only 8"),
    ([{**CELLS[1], "hugepages": [{"size_kib": 1048576, "total": 8, "free": 0}]}],
     r"cell 1: its huge page pools \(8192 MiB\) exceed its memory \(4096 MiB\)"),
])
def test_cells_no_host_could_have_are_a_report_the_controller_takes_but_check_cells_says_why(cells, wrong):
    report = NodeReport.model_validate({**REPORT, "node_type": "vm", "numa_cells": cells})

    with pytest.raises(ValueError, match=wrong):
        check_cells(report.numa_cells)
    assert check_cells(NodeReport.model_validate({**REPORT, "numa_cells": CELLS}).numa_cells)


def test_a_build_request_may_carry_the_vms_placement_and_a_bare_metal_one_none():
    base = {"uuid": "inst-1", "name": "v1", "flavor": {"name": "vm.small", "vcpus": 2, "ram": 512}}
    placement = {"cells": [{"guest_cell": 0, "host_cell": 1, "vcpus": [0, 1], "host_cpus": [2, 3],
                            "memory_mib": 512}], "pinned": True}

    assert BuildRequest.model_validate(base).numa_placement is None
    built = BuildRequest.model_validate({**base, "numa_placement": placement})
    assert built.numa_placement.cells[0].host_cpus == [2, 3]
    with pytest.raises(ValidationError, match="a host CPU is pinned to two vCPUs"):
        BuildRequest.model_validate({**base, "numa_placement": {
            **placement, "cells": [{**placement["cells"][0], "host_cpus": [2, 2]}]}})
