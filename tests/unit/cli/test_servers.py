"""Long actions: without --wait the operation id; with --wait the steps, the outcome, the fault."""

from __future__ import annotations

import json
import re

from cli_fake_api import FakeApi, Invoke

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _with_flavor(fake: FakeApi) -> None:
    fake.add("flavors", name="bm.small", vcpus=8, ram=16384, disk=40, type="bm", extra_specs={})


def test_create_without_wait_prints_the_operation_id(dpustack: Invoke, fake: FakeApi) -> None:
    _with_flavor(fake)
    result = dpustack("server", "create", "web1", "--flavor", "bm.small", "--image", "centos",
                      "--network", "net1")
    assert result.exit_code == 0, result.output
    op_id = re.search(f"operation ({UUID})", result.stdout).group(1)
    assert fake.store["operations"][op_id]["action"] == "create"
    assert json.loads(fake.requests[-1].content) == {"name": "web1", "flavor": "bm.small", "image": "centos",
                                                     "networks": [{"network": "net1"}]}


def test_create_with_wait_shows_each_step_and_ends_active(dpustack: Invoke, fake: FakeApi) -> None:
    _with_flavor(fake)
    result = dpustack("server", "create", "web1", "--flavor", "bm.small", "--network", "net1",
                      "--node", "dpu-bm-2", "--wait")
    assert result.exit_code == 0, result.output
    steps = ["schedule", "allocate ports", "build on agent", "bind ports"]
    positions = [result.stderr.index(f"✓ {name}") for name in steps]
    assert positions == sorted(positions)
    assert "4/4" in result.stderr  # the bar's total is the number of steps
    assert "server web1 is ACTIVE on dpu-bm-2" in result.stdout
    assert json.loads(fake.requests[0].content)["node"] == "dpu-bm-2"


def test_failed_action_exits_non_zero_with_the_fault(dpustack: Invoke, fake: FakeApi) -> None:
    _with_flavor(fake)
    fake.fail_step = ("schedule", "no bm node has 8 free vcpus and 16384 MiB")
    result = dpustack("server", "create", "web1", "--flavor", "bm.small", "--wait")
    assert result.exit_code == 1
    assert "✗ schedule" in result.stderr
    assert ("error: create web1 failed at step 'schedule': no bm node has 8 free vcpus and 16384 MiB"
            in result.stderr)
    assert "Traceback" not in result.output


def test_power_actions_report_the_new_status(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None)
    assert "is SHUTOFF" in dpustack("server", "stop", "web1", "--wait").stdout
    assert "is ACTIVE" in dpustack("server", "start", "web1", "--wait").stdout
    rebooted = dpustack("server", "reboot", "web1", "--hard", "--wait")
    assert rebooted.exit_code == 0 and "hard reboot web1" in rebooted.stdout
    reboot_request = next(r for r in reversed(fake.requests) if r.url.path.endswith("/reboot"))
    assert json.loads(reboot_request.content) == {"type": "hard"}


def test_pause_and_unpause_report_the_new_status(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="v1", status="ACTIVE", node="dpu-vm-1", ports=[], volumes=[], fault=None)
    paused = dpustack("server", "pause", "v1", "--wait")
    assert paused.exit_code == 0, paused.output
    assert "pause v1: server v1 is PAUSED on dpu-vm-1" in paused.stdout
    unpaused = dpustack("server", "unpause", "v1", "--wait")
    assert "unpause v1: server v1 is ACTIVE on dpu-vm-1" in unpaused.stdout
    assert [r.url.path for r in fake.requests if r.method == "POST"] == ["/v1/instances/v1/pause",
                                                                          "/v1/instances/v1/unpause"]
    assert re.search(f"operation ({UUID})", dpustack("server", "pause", "v1").stdout)  # without --wait: its id


def test_nic_and_volume_changes_go_to_their_sub_resources(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None)
    assert dpustack("server", "add-nic", "web1", "--network", "net1", "--wait").exit_code == 0
    ports = json.loads(dpustack("port", "list", "--server", "web1", "-f", "json").stdout)
    assert len(ports) == 1
    assert dpustack("server", "add-volume", "web1", "data1", "--wait").exit_code == 0
    assert dpustack("server", "remove-volume", "web1", "data1", "--wait").exit_code == 0
    removed = dpustack("server", "remove-nic", "web1", ports[0]["id"], "--wait")
    assert removed.exit_code == 0, removed.output
    paths = [(r.method, r.url.path) for r in fake.requests if r.method in ("POST", "DELETE")]
    assert paths == [("POST", "/v1/instances/web1/nics"), ("POST", "/v1/instances/web1/volumes"),
                     ("DELETE", "/v1/instances/web1/volumes/data1"),
                     ("DELETE", f"/v1/instances/web1/nics/{ports[0]['id']}")]


def test_delete_with_wait_says_deleted(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None)
    result = dpustack("server", "delete", "web1", "--wait")
    assert result.exit_code == 0, result.output
    assert "server deleted" in result.stdout
    assert dpustack("server", "show", "web1").exit_code == 1


def test_console_url_prints_type_and_url(dpustack: Invoke, fake: FakeApi) -> None:
    result = dpustack("server", "console", "web1", "--url", "-f", "json")
    assert json.loads(result.stdout) == {"type": "serial", "url": "ws://bmc.example/web1"}


def test_server_show_table_includes_the_fault(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ERROR", node=None, ports=[], volumes=[],
             fault={"message": "BMC refused power on", "step": "power on", "operation_id": "op1"})
    result = dpustack("server", "show", "web1")
    assert "ERROR" in result.stdout and "BMC refused power on" in result.stdout


def test_create_with_nics_sends_pci_flavor_and_vnic_type(dpustack: Invoke, fake: FakeApi) -> None:
    _with_flavor(fake)
    result = dpustack("server", "create", "web1", "--flavor", "bm.small", "--network", "net0",
                      "--nic", "net-id=net1,pci-flavor=1:IntelGPU,NvGPU,vnic-type=remote-managed",
                      "--nic", "net-id=net2")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content)["networks"] == [
        {"network": "net0"},
        {"network": "net1", "pci_flavor": "1:IntelGPU,NvGPU", "vnic_type": "remote-managed"},
        {"network": "net2"}]


def test_create_with_a_nic_s_security_groups_sends_them_as_a_list(dpustack: Invoke, fake: FakeApi) -> None:
    _with_flavor(fake)
    result = dpustack("server", "create", "web1", "--flavor", "bm.small",
                      "--nic", "net-id=net1,security-group=web,security-group=db")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content)["networks"] == [
        {"network": "net1", "security_groups": ["web", "db"]}]


def test_create_with_an_unknown_nic_key_says_which_and_sends_nothing(dpustack: Invoke, fake: FakeApi) -> None:
    _with_flavor(fake)
    result = dpustack("server", "create", "web1", "--flavor", "bm.small", "--nic", "net-id=net1,fixed-ip=10.0.0.5")
    assert result.exit_code == 1
    assert "error: --nic 'net-id=net1,fixed-ip=10.0.0.5': unknown key 'fixed-ip'" in result.stderr
    assert fake.requests == []


def test_server_show_lists_pci_requests_and_their_devices(dpustack: Invoke, fake: FakeApi) -> None:
    vf = {"id": "d1", "node": "dpu-bm-1", "address": "0000:03:00.2", "vendor_id": "15b3", "product_id": "101e",
          "dev_type": "type-VF", "card_serial_number": "MT2001X00001", "status": "allocated"}
    gpus = [{"id": f"d{n}", "node": "dpu-bm-1", "address": f"0000:8{n}:00.0", "vendor_id": "8086",
             "product_id": "0001", "dev_type": "type-PCI", "card_serial_number": "", "status": "allocated"}
            for n in (2, 3)]
    requests = [{"id": "r1", "count": 2, "flavors": ["IntelGPU", "NvGPU"], "spec": [], "source": "flavor",
                 "nic_index": None, "devices": gpus},
                {"id": "r2", "count": 1, "flavors": ["bf2_vf"], "spec": [], "source": "nic", "nic_index": 0,
                 "devices": [vf]}]
    fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None,
             pci_requests=requests)
    result = dpustack("server", "show", "web1")
    assert result.exit_code == 0, result.output
    assert "PCI requests" in result.stdout
    lines = result.stdout.splitlines()
    flavor_row = next(line for line in lines if "IntelGPU, NvGPU" in line)
    assert "flavor" in flavor_row and "0000:82:00.0 PCI 8086:0001" in flavor_row
    assert "0000:83:00.0 PCI 8086:0001" in result.stdout
    nic_row = next(line for line in lines if "bf2_vf" in line)
    assert "nic 0" in nic_row and "0000:03:00.2 VF 15b3:101e card MT2001X00001" in nic_row
    shown = json.loads(dpustack("server", "show", "web1", "-f", "json").stdout)
    assert shown["pci_requests"] == requests


def test_server_show_without_pci_requests_prints_no_pci_table(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None,
             pci_requests=[])
    result = dpustack("server", "show", "web1")
    assert result.exit_code == 0 and "PCI requests" not in result.stdout


def test_delete_with_force_asks_for_it_and_shows_that_the_node_was_not_cleaned(dpustack: Invoke,
                                                                              fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ERROR", node="dpu-bm-1", ports=[], volumes=[], fault=None)
    result = dpustack("server", "delete", "web1", "--force", "--wait")
    assert result.exit_code == 0, result.output
    (delete,) = [r for r in fake.requests if r.method == "DELETE"]
    assert delete.url.path == "/v1/instances/web1" and delete.url.params["force"] == "true"
    assert "server deleted" in result.stdout
    assert "warning: node dpu-bm-1 was not called" in result.stderr
    op_id = next(iter(fake.store["operations"]))
    shown = dpustack("operation", "show", op_id)
    assert "release_without_node" in shown.stdout and "! node dpu-bm-1 was not called" in shown.stdout


def test_delete_without_force_does_not_ask_for_it(dpustack: Invoke, fake: FakeApi) -> None:
    fake.add("instances", name="web1", status="ACTIVE", node="dpu-bm-1", ports=[], volumes=[], fault=None)
    assert dpustack("server", "delete", "web1").exit_code == 0
    (delete,) = [r for r in fake.requests if r.method == "DELETE"]
    assert "force" not in delete.url.params
