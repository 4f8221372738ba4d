"""Stop, start, reboot, console, NIC and volume hot-plug, and delete of a bare-metal instance."""

from .conftest import MAC_C, Agent


def test_stop_powers_the_host_off_and_keeps_its_functions(built: Agent):
    functions_before = built.hardware()["functions"]

    response = built.post("/v1/instances/inst-1/stop")

    assert response.status_code == 200
    assert (response.json()["instance"]["status"], response.json()["instance"]["power_state"]) == ("SHUTOFF", "off")
    assert built.hardware()["power"] == "off"
    assert built.hardware()["functions"] == functions_before
    assert built.get("/v1/status").json()["instances"] == [{"uuid": "inst-1", "status": "down"}]


def test_start_powers_a_stopped_host_back_on(built: Agent):
    built.post("/v1/instances/inst-1/stop")

    response = built.post("/v1/instances/inst-1/start")

    assert response.json()["instance"]["status"] == "ACTIVE"
    assert built.hardware()["power"] == "on"


def test_stopping_twice_is_harmless(built: Agent):
    built.post("/v1/instances/inst-1/stop")

    response = built.post("/v1/instances/inst-1/stop")

    assert response.status_code == 200
    assert built.hardware()["power"] == "off"


def test_reboot_goes_through_the_bmc_hard_or_soft(built: Agent):
    for kind in ("soft", "hard"):
        response = built.post("/v1/instances/inst-1/reboot", {"type": kind})
        assert response.status_code == 200
        assert [s["name"] for s in response.json()["steps"]] == [f"{kind} reboot host"]
    assert built.drivers.bmc.faults.calls.count("reboot") == 2


def test_a_soft_reboot_of_a_stopped_instance_is_a_conflict_but_a_hard_one_starts_it(built: Agent):
    built.post("/v1/instances/inst-1/stop")

    soft = built.post("/v1/instances/inst-1/reboot", {"type": "soft"})
    hard = built.post("/v1/instances/inst-1/reboot", {"type": "hard"})

    assert soft.status_code == 409 and "SHUTOFF" in soft.json()["error"]["message"]
    assert hard.json()["instance"]["power_state"] == "on"


def test_the_console_is_the_bmcs(built: Agent):
    response = built.get("/v1/instances/inst-1/console")

    assert response.json() == {"type": "html5", "url": "https://bmc.invalid/console"}


def test_add_nic_plugs_a_new_function_with_the_ports_mac(built: Agent):
    response = built.post("/v1/instances/inst-1/nics", {"port_id": "port-c", "mac": MAC_C})

    assert response.status_code == 200
    nic = response.json()["instance"]["nics"][-1]
    assert (nic["port_id"], nic["mac"], nic["function_id"]) == ("port-c", MAC_C, "net-port-c")
    plugged = {p.name: p.external_ids for p in built.drivers.switch.list_ports()}
    assert plugged[nic["representor"]] == {"iface-id": "port-c", "attached-mac": MAC_C}


def test_adding_a_nic_twice_is_one_nic(built: Agent):
    built.post("/v1/instances/inst-1/nics", {"port_id": "port-c", "mac": MAC_C})

    again = built.post("/v1/instances/inst-1/nics", {"port_id": "port-c", "mac": MAC_C})

    assert again.json()["steps"] == []
    assert len(again.json()["instance"]["nics"]) == 3


def test_remove_nic_unplugs_the_representor_before_deleting_its_pf(built: Agent):
    response = built.delete("/v1/instances/inst-1/nics/port-b")

    assert response.status_code == 200
    assert [s["name"] for s in response.json()["steps"]] == [
        "unplug port port-b from br-int", "delete net function net-port-b"]
    assert [n["port_id"] for n in response.json()["instance"]["nics"]] == ["port-a"]
    assert "net-port-b" not in {f[0] for f in built.hardware()["functions"]}
    assert "port-b" not in {p.external_ids["iface-id"] for p in built.drivers.switch.list_ports()}


def test_removing_a_nic_that_is_gone_does_nothing(built: Agent):
    response = built.delete("/v1/instances/inst-1/nics/port-zzz")

    assert response.status_code == 200
    assert response.json()["steps"] == []


def test_add_volume_attaches_it_through_a_new_storage_function(built: Agent):
    response = built.post("/v1/instances/inst-1/volumes", {"volume_id": "vol-data", "uri": "nvmf://10.0.0.5/data"})

    assert response.status_code == 200
    volume = response.json()["instance"]["volumes"][-1]
    assert (volume["volume_id"], volume["function_id"], volume["bootable"]) == (
        "vol-data", "storage-vol-data", False)
    assert ("storage-vol-data", "vol-data", "nvmf://10.0.0.5/data") in built.hardware()["attachments"]


def test_remove_volume_unplugs_its_pf_before_detaching_it(built: Agent):
    response = built.delete("/v1/instances/inst-1/volumes/vol-boot")

    assert [s["name"] for s in response.json()["steps"]] == [
        "delete storage function storage-vol-boot", "detach volume vol-boot"]
    assert response.json()["instance"]["volumes"] == []
    assert built.hardware()["attachments"] == []


def test_adding_a_nic_whose_function_id_is_already_in_use_is_a_conflict(built: Agent):
    built.post("/v1/functions", {"id": "net-port-x", "type": "PF"})

    response = built.post("/v1/instances/inst-1/nics", {"port_id": "port-x", "mac": MAC_C})

    assert response.status_code == 409
    assert response.json()["error"]["field"] == "port_id"


def test_delete_unplugs_every_nic_before_deleting_its_pf_and_every_pf_before_its_volume(built: Agent):
    response = built.delete("/v1/instances/inst-1")

    assert response.status_code == 200
    names = [s["name"] for s in response.json()["steps"]]
    assert names[0] == "power off host"
    for port in ("port-a", "port-b"):
        assert names.index(f"unplug port {port} from br-int") < names.index(f"delete net function net-{port}")
    assert names.index("delete storage function storage-vol-boot") < names.index("detach volume vol-boot")
    assert names[-2:] == ["forget instance", "close serial console"]


def test_delete_leaves_nothing_behind(built: Agent):
    built.delete("/v1/instances/inst-1")

    assert built.hardware() == {"functions": [], "ports": [], "attachments": [], "power": "off"}
    assert built.records() == {"functions": [], "ports": [], "volumes": [], "instances": []}
    assert built.get("/v1/instances/inst-1").status_code == 404


def test_deleting_a_gone_instance_is_200_with_no_steps(agent: Agent):
    response = agent.delete("/v1/instances/never-was")

    assert response.status_code == 200
    assert response.json() == {"steps": []}


def test_a_failed_delete_stops_keeps_what_is_left_and_can_be_repeated(built: Agent):
    built.drivers.switch.faults.arm("del_port", skip=1)

    failed = built.delete("/v1/instances/inst-1")

    assert failed.status_code == 502
    assert "switch.del_port: injected fault" in failed.json()["error"]["message"]
    statuses = [(s["name"], s["status"]) for s in failed.json()["steps"]]
    assert statuses[-1] == ("unplug port port-b from br-int", "failed")
    assert ("unplug port port-a from br-int", "done") in statuses
    remaining = built.get("/v1/instances/inst-1").json()
    assert remaining["power_state"] == "off"
    assert [v["volume_id"] for v in remaining["volumes"]] == ["vol-boot"]
    assert "port-b" in {p.external_ids["iface-id"] for p in built.drivers.switch.list_ports()}
    assert "net-port-b" in {f[0] for f in built.hardware()["functions"]}

    retried = built.delete("/v1/instances/inst-1")

    assert retried.status_code == 200
    assert built.hardware() == {"functions": [], "ports": [], "attachments": [], "power": "off"}
    assert built.records() == {"functions": [], "ports": [], "volumes": [], "instances": []}


def test_lifecycle_calls_on_an_unknown_instance_are_404(agent: Agent):
    for method, path in [("POST", "/v1/instances/x/stop"), ("POST", "/v1/instances/x/start"),
                         ("GET", "/v1/instances/x/console"), ("DELETE", "/v1/instances/x/nics/p")]:
        assert agent.call(method, path).status_code == 404, path
