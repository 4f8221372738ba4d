"""Direct snic-controller, OVS and BMC calls (seed 000 component interfaces)."""

from __future__ import annotations

from dpustack.agent.hardware import load_drivers

from dpustack.agent.store import PortBinding

from .conftest import MAC_A, MAC_B, Agent


def test_create_pf_returns_its_bdf_and_representor_and_is_idempotent(agent: Agent):
    body = {"id": "fn-1", "mac": "AA-BB-CC-DD-EE-01", "type": "PF", "features": ["tso"]}

    created = agent.post("/v1/functions", body)
    again = agent.post("/v1/functions", body)

    assert created.status_code == 201
    function = created.json()
    assert function["mac"] == "aa:bb:cc:dd:ee:01"
    assert (function["kind"], function["features"]) == ("net", ["tso"])
    assert function["bdf"].startswith("0000:") and function["representor"]
    assert again.json() == function
    assert agent.get("/v1/functions/fn-1").json() == function


def test_create_vf_without_an_id_gets_one(agent: Agent):
    response = agent.post("/v1/functions", {"type": "VF"})

    assert response.status_code == 201
    assert response.json()["type"] == "VF"
    assert agent.get(f"/v1/functions/{response.json()['id']}").status_code == 200


def test_a_function_id_reused_with_other_settings_is_a_conflict(agent: Agent):
    agent.post("/v1/functions", {"id": "fn-1", "mac": "aa:bb:cc:dd:ee:01"})

    response = agent.post("/v1/functions", {"id": "fn-1", "mac": "aa:bb:cc:dd:ee:02"})

    assert response.status_code == 409
    assert response.json()["error"]["field"] == "id"


def test_a_function_with_a_port_on_it_cannot_be_deleted_until_the_port_is(agent: Agent):
    function = agent.post("/v1/functions", {"id": "fn-1", "mac": "aa:bb:cc:dd:ee:01"}).json()
    port = agent.post("/v1/switch/ports", {"bridge": "br-int", "port_name": function["representor"],
                                           "external_id": "port-9", "pf_id": "fn-1"})
    assert port.status_code == 201
    assert port.json()["external_ids"] == {"iface-id": "port-9", "attached-mac": "aa:bb:cc:dd:ee:01"}

    refused = agent.delete("/v1/functions/fn-1")
    assert refused.status_code == 409 and "port-9" in refused.json()["error"]["message"]

    assert agent.delete(f"/v1/switch/bridges/br-int/ports/{function['representor']}").status_code == 204
    assert agent.delete("/v1/functions/fn-1").status_code == 204
    assert agent.get("/v1/functions/fn-1").status_code == 404
    assert agent.delete("/v1/functions/fn-1").status_code == 204


def test_switch_ports_are_listed_per_bridge_with_their_function(agent: Agent):
    agent.post("/v1/functions", {"id": "fn-1"})
    agent.post("/v1/switch/ports", {"bridge": "br-int", "port_name": "tap1", "external_id": "p1", "pf_id": "fn-1"})
    agent.post("/v1/switch/ports", {"bridge": "br-ex", "port_name": "tap2", "external_id": "p2"})

    ports = agent.get("/v1/switch/ports", params={"bridge": "br-int"}).json()

    assert ports == [{"bridge": "br-int", "port_name": "tap1", "external_ids": {"iface-id": "p1"}, "pf_id": "fn-1"}]
    assert len(agent.get("/v1/switch/ports").json()) == 2


def test_adding_the_same_switch_port_twice_is_fine_but_reusing_its_name_is_not(agent: Agent):
    body = {"bridge": "br-int", "port_name": "tap1", "external_id": "p1"}
    assert agent.post("/v1/switch/ports", body).status_code == 201
    assert agent.post("/v1/switch/ports", body).status_code == 201

    response = agent.post("/v1/switch/ports", {**body, "external_id": "p2"})

    assert response.status_code == 409
    assert response.json()["error"]["field"] == "port_name"


def test_a_switch_port_for_an_unknown_function_is_404(agent: Agent):
    response = agent.post("/v1/switch/ports", {"bridge": "br-int", "port_name": "tap1", "external_id": "p1",
                                               "pf_id": "nope"})

    assert response.status_code == 404
    assert response.json()["error"]["field"] == "pf_id"


def test_an_instance_nic_cannot_be_unplugged_through_the_switch_api(built: Agent):
    representor = built.get("/v1/instances/inst-1").json()["nics"][0]["representor"]

    response = built.delete(f"/v1/switch/bridges/br-int/ports/{representor}")

    assert response.status_code == 409
    assert "remove the NIC instead" in response.json()["error"]["message"]


def test_an_instance_function_cannot_be_deleted_directly(built: Agent):
    response = built.delete("/v1/functions/net-port-a")

    assert response.status_code == 409
    assert "inst-1" in response.json()["error"]["message"]


def test_a_storage_device_serves_its_volume_until_deleted(agent: Agent):
    created = agent.post("/v1/storage-devices", {"volume_id": "vol-9", "uri": "nvmf://x/vol-9"})

    assert created.status_code == 201
    assert (created.json()["id"], created.json()["kind"]) == ("storage-vol-9", "storage")
    assert agent.hardware()["attachments"] == [("storage-vol-9", "vol-9", "nvmf://x/vol-9")]
    assert agent.post("/v1/storage-devices", {"volume_id": "vol-9", "uri": "nvmf://x/vol-9"}).status_code == 201
    assert agent.delete("/v1/functions/storage-vol-9").status_code == 409

    assert agent.delete("/v1/storage-devices/storage-vol-9").status_code == 204

    assert agent.hardware()["attachments"] == [] and agent.hardware()["functions"] == []


def test_a_storage_device_asked_again_with_other_settings_is_a_409_and_keeps_its_volume(agent: Agent):
    agent.post("/v1/storage-devices", {"id": "sd-1", "volume_id": "vol-9", "uri": "nvmf://x/vol-9"})
    before = agent.snapshot()

    other_uri = agent.post("/v1/storage-devices", {"id": "sd-1", "volume_id": "vol-9", "uri": "nvmf://y/vol-9"})
    other_volume = agent.post("/v1/storage-devices", {"id": "sd-1", "volume_id": "vol-8", "uri": "nvmf://x/vol-8"})

    assert (other_uri.status_code, other_uri.json()["error"]["field"]) == (409, "uri")
    assert (other_volume.status_code, other_volume.json()["error"]["field"]) == (409, "id")
    assert agent.snapshot() == before


def test_a_storage_device_that_fails_to_attach_leaves_no_function(agent: Agent):
    agent.drivers.storage.faults.arm("attach")

    response = agent.post("/v1/storage-devices", {"volume_id": "vol-9", "uri": "nvmf://x/vol-9"})

    assert response.status_code == 502
    assert "storage.attach: injected fault" in response.json()["error"]["message"]
    assert agent.hardware()["functions"] == []
    assert agent.records()["functions"] == []


def test_bmc_power_calls_switch_the_host_and_show_on_the_instance(built: Agent):
    assert built.post("/v1/bmc/power_off").json() == {"power_state": "off"}
    assert built.get("/v1/bmc/power").json() == {"power_state": "off"}
    assert built.get("/v1/instances/inst-1").json()["status"] == "SHUTOFF"

    assert built.post("/v1/bmc/power_on").json() == {"power_state": "on"}
    assert built.get("/v1/instances/inst-1").json()["status"] == "ACTIVE"


def test_bmc_hw_info_and_console_never_reveal_the_credentials(start_agent, config_for):
    config = config_for(bmc={"address": "10.9.9.9", "username": "root", "password": "calvin-secret",
                             "memory": {"cpu": 32, "mem": 131072, "serial_number": "SN-7", "model": "R650"}})
    agent = start_agent(load_drivers(config), config=config)

    info = agent.get("/v1/bmc/hw_info").json()
    console = agent.get("/v1/bmc/console").json()

    assert info == {"serial_number": "SN-7", "cpu": 32, "mem": 131072, "model": "R650"}
    assert console == {"type": "html5", "url": "https://10.9.9.9/console"}
    assert "calvin-secret" not in repr(info) + repr(console) + repr(agent.service.config)


def test_a_bmc_failure_is_a_readable_502(agent: Agent):
    agent.drivers.bmc.faults.arm("power_on")

    response = agent.post("/v1/bmc/power_on")

    assert response.status_code == 502
    assert response.json()["error"] == {"code": "driver_error", "message": "bmc.power_on: injected fault"}


# -- packet-rate limits --------------------------------------------------------
def _representor(agent: Agent, port_id: str) -> str:
    [nic] = [n for n in agent.get("/v1/instances/inst-1").json()["nics"] if n["port_id"] == port_id]
    return nic["representor"]


def test_a_plugged_ports_packet_rate_is_set_recorded_and_cleared(built: Agent):
    representor = _representor(built, "port-a")
    answer = built.call("PUT", "/v1/switch/ports/port-a/qos", json={"pps": 1000})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"port_id": "port-a", "bridge": "br-int", "port_name": representor, "pps": 1000}
    assert built.drivers.switch.packet_rate("br-int", representor) == 1000
    assert built.service.store.get(PortBinding, "port-a").qos_pps == 1000
    assert built.call("PUT", "/v1/switch/ports/port-a/qos", json={}).json()["pps"] is None  # {}: no limit
    assert built.drivers.switch.packet_rate("br-int", representor) is None
    assert built.service.store.get(PortBinding, "port-a").qos_pps is None


def test_a_packet_rate_for_a_port_not_plugged_here_or_a_bad_rate_is_refused(built: Agent):
    answer = built.call("PUT", "/v1/switch/ports/port-z/qos", json={"pps": 1000})
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "port_id", answer.text
    for body in ({"pps": 0}, {"pps": "fast"}, {"rate": 5}):
        assert built.call("PUT", "/v1/switch/ports/port-a/qos", json=body).status_code == 400, body


def test_a_packet_rate_the_switch_refuses_is_a_502_and_the_old_limit_stays(built: Agent):
    representor = _representor(built, "port-a")
    built.call("PUT", "/v1/switch/ports/port-a/qos", json={"pps": 1000})
    built.drivers.switch.faults.arm("set_packet_rate", message="meter table full")
    answer = built.call("PUT", "/v1/switch/ports/port-a/qos", json={"pps": 50})
    assert answer.status_code == 502 and "meter table full" in answer.json()["error"]["message"], answer.text
    assert built.service.store.get(PortBinding, "port-a").qos_pps == 1000
    assert built.drivers.switch.packet_rate("br-int", representor) == 1000


def test_a_nic_plugged_with_a_packet_rate_gets_it_and_loses_it_when_unplugged(agent: Agent):
    networks = [{"port_id": "port-a", "mac": MAC_A, "network_id": "net-1", "qos_pps": 700}]
    assert agent.build(networks=networks).status_code == 200
    representor = _representor(agent, "port-a")
    assert agent.drivers.switch.packet_rate("br-int", representor) == 700
    answer = agent.post("/v1/instances/inst-1/nics", {"port_id": "port-b", "mac": MAC_B, "qos_pps": 80})
    assert answer.status_code == 200, answer.text
    assert agent.drivers.switch.packet_rate("br-int", _representor(agent, "port-b")) == 80
    calls = list(agent.drivers.switch.faults.calls)
    assert agent.call("DELETE", "/v1/instances/inst-1/nics/port-a").status_code == 200
    assert "set_packet_rate" in agent.drivers.switch.faults.calls[len(calls):]  # its meter removed, then unplugged
    assert agent.service.store.get(PortBinding, "port-a") is None
