"""The reconciler: a SoC reboot loses every hot-plugged function; the agent rebuilds them as they were."""

from __future__ import annotations

import time

from dpustack.drivers.functions import FunctionSpec

from .conftest import Agent, memory_drivers


def test_after_a_soc_reboot_functions_come_back_with_the_same_ids_bdfs_and_ports(start_agent, config_for):
    config = config_for()
    first = start_agent(config=config)
    instance = first.build().json()["instance"]
    before = first.hardware()

    # the SoC reboots: hot-plugged functions, switch ports and attachments are gone; the host BMC is not
    second = start_agent(memory_drivers(bmc=first.drivers.bmc), config=config)

    assert second.hardware() == before
    assert second.get("/v1/instances/inst-1").json() == instance
    assert {f["id"]: f["bdf"] for f in second.get("/v1/functions").json()} == {
        **{n["function_id"]: n["bdf"] for n in instance["nics"]},
        **{v["function_id"]: v["bdf"] for v in instance["volumes"]}}
    ports = {p["external_ids"]["iface-id"]: p for p in second.get("/v1/switch/ports").json()}
    assert ports["port-a"]["port_name"] == instance["nics"][0]["representor"]
    assert ports["port-a"]["pf_id"] == "net-port-a"
    assert second.get("/v1/status").json()["ready"] is True


def test_a_function_removed_behind_the_agents_back_is_recreated_at_the_same_bdf(built: Agent):
    bdf = built.drivers.functions.get("net-port-a").bdf
    built.drivers.switch.del_port("br-int", built.drivers.functions.get("net-port-a").representor)
    built.drivers.functions.delete("net-port-a")

    result = built.service.reconciler.run()

    assert result.ok
    assert built.drivers.functions.get("net-port-a").bdf == bdf
    assert "port-a" in {p.external_ids["iface-id"] for p in built.drivers.switch.list_ports()}


def test_lost_external_ids_are_written_back(built: Agent):
    representor = built.drivers.functions.get("net-port-a").representor
    built.drivers.switch.del_port("br-int", representor)
    built.drivers.switch.add_port("br-int", representor, {"iface-id": "someone-else"})

    built.service.reconciler.run()

    [port] = [p for p in built.drivers.switch.list_ports() if p.name == representor]
    assert port.external_ids["iface-id"] == "port-a"


def test_a_detached_volume_is_reattached(built: Agent):
    built.drivers.storage.detach("storage-vol-boot", "vol-boot")

    built.service.reconciler.run()

    assert built.hardware()["attachments"] == [("storage-vol-boot", "vol-boot", "nvmf://10.0.0.5/vol-boot")]


def test_a_host_shut_down_from_inside_shows_as_shutoff_after_a_pass(built: Agent):
    built.drivers.bmc.power_off()  # the OS ran `shutdown`

    built.service.reconciler.run()

    assert built.get("/v1/instances/inst-1").json()["status"] == "SHUTOFF"
    assert built.get("/v1/status").json()["instances"] == [{"uuid": "inst-1", "status": "down"}]


def test_an_instance_that_cannot_be_repaired_is_error_until_a_pass_succeeds(built: Agent):
    built.drivers.functions.delete("net-port-b")
    built.drivers.functions.faults.arm("create")

    failing = built.service.reconciler.run()

    assert not failing.ok
    instance = built.get("/v1/instances/inst-1").json()
    assert instance["status"] == "ERROR"
    assert "functions.create: injected fault" in instance["fault"]
    status = built.get("/v1/status").json()
    assert status["ready"] is False
    assert status["instances"] == [{"uuid": "inst-1", "status": "error"}]

    assert built.service.reconciler.run().ok
    assert built.get("/v1/instances/inst-1").json()["status"] == "ACTIVE"
    assert built.get("/v1/status").json()["ready"] is True


def test_orphans_are_reported_and_never_deleted(built: Agent):
    built.drivers.functions.create(FunctionSpec("stray", slot=40, mac="aa:bb:cc:dd:ee:99"))
    built.drivers.switch.add_port("br-int", "pf40hpf", {"iface-id": "someone-elses-port"})
    built.drivers.switch.add_port("br-int", "patch-tun", {})  # not a cloud port: not ours to claim
    built.drivers.storage.attach("stray", "vol-stray", "nvmf://x/stray")

    built.service.reconciler.run()

    assert built.get("/v1/status").json()["orphans"] == {
        "functions": ["stray"], "ports": ["br-int/pf40hpf"], "volumes": ["vol-stray"]}
    assert built.drivers.functions.get("stray") is not None
    assert len(built.drivers.switch.list_ports()) == 4
    assert built.get("/v1/status").json()["ready"] is True


def test_an_orphan_is_removed_only_when_asked_explicitly(built: Agent):
    built.drivers.functions.create(FunctionSpec("stray", slot=40))
    built.service.reconciler.run()

    assert built.delete("/v1/functions/stray").status_code == 204

    built.service.reconciler.run()
    assert built.get("/v1/status").json()["orphans"]["functions"] == []


def test_new_functions_avoid_the_slot_of_an_orphan(start_agent):
    drivers = memory_drivers()
    drivers.functions.create(FunctionSpec("stray", slot=0))
    agent = start_agent(drivers)

    response = agent.build(volumes=[])

    assert response.status_code == 200, response.text
    assert "0000:41:00.0" not in {n["bdf"] for n in response.json()["instance"]["nics"]}


def test_the_background_loop_repairs_without_being_asked(start_agent, config_for):
    agent = start_agent(config=config_for(reconcile_interval=0.05, report_interval=0.05), background=True)
    assert agent.build().status_code == 200
    bdf = agent.drivers.functions.get("net-port-a").bdf

    agent.drivers.functions.delete("net-port-a")

    deadline = time.monotonic() + 5
    while agent.drivers.functions.get("net-port-a") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.drivers.functions.get("net-port-a").bdf == bdf


def test_a_packet_rate_limit_the_switch_lost_is_re_applied_and_reported(agent: Agent):
    networks = [{"port_id": "port-a", "mac": "aa:bb:cc:00:00:0a", "network_id": "net-1", "qos_pps": 1000},
                {"port_id": "port-b", "mac": "aa:bb:cc:00:00:0b", "network_id": "net-1"}]
    assert agent.build(networks=networks).status_code == 200
    switch = agent.drivers.switch
    representor = agent.drivers.functions.get("net-port-a").representor
    assert agent.service.reconciler.run().repaired == []  # in place: nothing to do

    switch.wipe_packet_rates()  # ovn-controller reconnected and cleared br-int
    result = agent.service.reconciler.run()
    assert result.ok and result.repaired == [
        f"re-applied packet-rate limit 1000 pkt/s to port port-a (br-int/{representor})"]
    assert switch.packet_rate("br-int", representor) == 1000

    switch.del_port("br-int", representor)  # unplugged behind the agent's back: re-plugged with its limit
    result = agent.service.reconciler.run()
    assert result.ok and result.repaired == [f"re-plugged port port-a as br-int/{representor}"]
    assert switch.packet_rate("br-int", representor) == 1000

    switch.wipe_packet_rates()
    switch.faults.arm("set_packet_rate", message="ovs-vswitchd is restarting")
    result = agent.service.reconciler.run()
    assert result.errors == ["switch.set_packet_rate: ovs-vswitchd is restarting"]
    assert agent.get("/v1/instances/inst-1").json()["status"] == "ERROR"
    assert agent.service.reconciler.run().ok and switch.packet_rate("br-int", representor) == 1000
    assert agent.get("/v1/instances/inst-1").json()["status"] == "ACTIVE"
