"""The controller↔agent messages: what goes on the wire is what each side expects of the other."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dpustack.contract.instances import InstanceOut, NicRequest
from dpustack.contract.node import CredentialsRotation, NodeReport

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
