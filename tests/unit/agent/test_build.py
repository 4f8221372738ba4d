"""build_and_run_instance on a bare-metal node (seed 000): volumes, NICs, power, record."""

from dpustack.agent.store import InstanceRecord
from dpustack.drivers.functions import FunctionSpec, host_bdf

from .conftest import MAC_A, MAC_B, Agent


def test_build_with_two_nics_and_a_boot_volume_plugs_everything_and_powers_the_host_on(agent: Agent):
    response = agent.build()

    assert response.status_code == 200, response.text
    instance = response.json()["instance"]
    assert (instance["uuid"], instance["status"], instance["power_state"]) == ("inst-1", "ACTIVE", "on")
    assert [(n["port_id"], n["mac"], n["function_id"]) for n in instance["nics"]] == [
        ("port-a", MAC_A, "net-port-a"), ("port-b", MAC_B, "net-port-b")]
    assert [(v["volume_id"], v["function_id"], v["bootable"]) for v in instance["volumes"]] == [
        ("vol-boot", "storage-vol-boot", True)]
    hardware = agent.hardware()
    assert hardware["power"] == "on"
    assert {f[0] for f in hardware["functions"]} == {"storage-vol-boot", "net-port-a", "net-port-b"}
    assert hardware["attachments"] == [("storage-vol-boot", "vol-boot", "nvmf://10.0.0.5/vol-boot")]
    plugged = {p.external_ids["iface-id"]: p for p in agent.drivers.switch.list_ports("br-int")}
    assert plugged["port-a"].external_ids == {"iface-id": "port-a", "attached-mac": MAC_A}
    assert plugged["port-b"].name == instance["nics"][1]["representor"]


def test_build_reports_each_step_in_seed_order(agent: Agent):
    steps = agent.build().json()["steps"]

    assert [s["name"] for s in steps] == [
        "attach volume vol-boot", "create storage function storage-vol-boot",
        "create net function net-port-a", "plug port port-a into br-int",
        "create net function net-port-b", "plug port port-b into br-int",
        "open serial console", "power on host", "record instance"]
    assert {s["status"] for s in steps} == {"done"}
    assert all(isinstance(s["duration_ms"], int) and s["error"] is None for s in steps)


def test_every_function_gets_its_own_host_bdf_and_representor(agent: Agent):
    instance = agent.build().json()["instance"]

    bdfs = [n["bdf"] for n in instance["nics"]] + [v["bdf"] for v in instance["volumes"]]
    assert len(set(bdfs)) == 3
    functions = {f["id"]: f for f in agent.get("/v1/functions").json()}
    assert functions["storage-vol-boot"]["kind"] == "storage"
    assert functions["net-port-a"]["representor"].endswith("hpf")
    assert functions["storage-vol-boot"]["representor"] != functions["net-port-a"]["representor"]


def test_building_an_existing_instance_returns_it_without_doing_anything(built: Agent):
    before = built.snapshot()

    response = built.build()

    assert response.status_code == 200
    assert response.json()["steps"] == []
    assert response.json()["instance"]["uuid"] == "inst-1"
    assert built.snapshot() == before


def test_a_bare_metal_node_hosts_one_instance_only(built: Agent):
    response = built.build(uuid="inst-2", networks=[], volumes=[])

    assert response.status_code == 409
    assert response.json()["error"]["field"] == "uuid"
    assert "already hosts instance 'inst-1'" in response.json()["error"]["message"]


def test_the_instance_appears_in_listings_and_counts_in_the_node_report(built: Agent):
    assert [i["uuid"] for i in built.get("/v1/instances").json()] == ["inst-1"]
    assert built.get("/v1/instances/inst-1").json()["vcpus"] == 4

    status = built.get("/v1/status").json()
    assert (status["used_cpu"], status["used_mem"]) == (4, 8192)
    assert (status["total_cpu"], status["total_mem"]) == (64, 262144)
    assert status["instances"] == [{"uuid": "inst-1", "status": "up"}]
    assert status["ready"] is True


def test_user_data_is_not_kept_on_the_node(built: Agent):
    [record] = built.service.store.find(InstanceRecord)

    assert "do-not-store" not in repr(record.spec)
    assert record.spec["flavor"]["name"] == "bm.4c8g"


def test_an_unknown_instance_is_404(agent: Agent):
    response = agent.get("/v1/instances/nope")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_host_built_with_power_off_has_its_functions_and_stays_off(agent: Agent):
    # a cold migration of a stopped instance to bare metal builds it this way
    response = agent.build(power="off")

    assert response.status_code == 200, response.text
    assert (response.json()["instance"]["status"], response.json()["instance"]["power_state"]) == ("SHUTOFF", "off")
    assert agent.driver("bmc").power_state() == "off"
    assert len(agent.drivers.functions.list()) == 3  # two NICs and the boot volume, all plugged


def test_a_build_puts_each_function_at_the_host_address_it_is_asked_for_when_that_slot_is_free(agent: Agent):
    agent.drivers.functions.create(FunctionSpec(id="other", slot=5, kind="storage"))  # not this instance's

    instance = agent.build(bdfs={"port-b": host_bdf(2), "vol-boot": host_bdf(3), "port-a": host_bdf(5)}).json()

    assert [v["bdf"] for v in instance["instance"]["volumes"]] == [host_bdf(3)]
    assert [n["bdf"] for n in instance["instance"]["nics"]] == [host_bdf(0), host_bdf(2)]  # slot 5 is taken
