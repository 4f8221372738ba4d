"""The bare-metal lifecycle of seed 000, through the controller API and real agent apps."""

from __future__ import annotations

import threading

from sqlalchemy import select

from dpustack.db.models import Node


def _server(cloud, name):
    return cloud.call("GET", f"/v1/instances/{name}")


def _node_of(cloud, name):
    return _server(cloud, name)["node"]


def test_build_plugs_every_nic_binds_the_boot_volume_and_powers_on(cloud):
    cloud.setup_basics()
    op = cloud.build("web1", user_data="#cloud-config")
    assert op["status"] == "succeeded", op
    assert [s["name"] for s in op["steps"]] == ["schedule", "allocate_ports", "create_boot_volume",
                                                "build_on_node", "bind_ports", "activate"]
    assert all(s["status"] == "done" and s["started_at"] and s["finished_at"] for s in op["steps"])
    substeps = [s["name"] for s in op["steps"][3]["detail"]["substeps"]]
    assert substeps and all(s["status"] == "done" for s in op["steps"][3]["detail"]["substeps"])
    assert "substeps" not in op["steps"][4]["detail"]  # each step shows only its own work

    server = _server(cloud, "web1")
    assert server["status"] == "ACTIVE" and server["task_state"] is None and server["fault"] is None
    node = server["node"]
    port = cloud.call("GET", f"/v1/ports/{server['ports'][0]}")
    assert port["binding_host_id"] == node and port["status"] == "ACTIVE"
    assert port["fixed_ips"][0]["ip_address"] == "10.10.0.2"
    assert port["binding_profile"]["bdf"]
    boot = cloud.call("GET", f"/v1/volumes/{server['volumes'][0]}")
    assert boot["status"] == "in-use" and boot["bootable"] and boot["instance_id"] == server["id"]
    # the server itself says which function carries each port and serves each volume
    assert server["nics"][0] == {"port_id": port["id"], "network_id": port["network_id"],
                                 "mac_address": port["mac_address"], "ip_address": "10.10.0.2",
                                 "bdf": port["binding_profile"]["bdf"]}
    assert server["disks"] == [{"volume_id": boot["id"], "bootable": True, "bdf": boot["attachments"][0]["bdf"]}]
    assert boot["attachments"][0]["bdf"]

    drivers = cloud.drivers(node)
    plugged = drivers.switch.list_ports("br-int")
    assert [p.external_ids["iface-id"] for p in plugged] == [port["id"]]
    assert {f.kind for f in drivers.functions.list()} == {"net", "storage"}
    nic_function = next(f for f in drivers.functions.list() if f.kind == "net")
    assert nic_function.mac == port["mac_address"]
    assert [a.volume_id for a in drivers.storage.list()] == [boot["id"]]
    assert drivers.bmc.power_state() == "on"


def test_every_bare_metal_flow_end_to_end(cloud):
    cloud.setup_basics()
    assert cloud.build("web1")["status"] == "succeeded"
    node = _node_of(cloud, "web1")
    drivers = cloud.drivers(node)

    op = cloud.act("POST", "/v1/instances/web1/nics", {"network": "net1"})
    assert op["status"] == "succeeded", op
    ports = cloud.call("GET", "/v1/ports?instance=web1")
    assert len(ports) == 2 and len(drivers.switch.list_ports("br-int")) == 2

    cloud.volume("data1", size=10)
    assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
    assert cloud.call("GET", "/v1/volumes/data1")["status"] == "in-use"
    assert len(drivers.storage.list()) == 2

    console = cloud.call("GET", "/v1/instances/web1/console")
    assert console["type"] and console["url"]

    assert cloud.act("POST", "/v1/instances/web1/stop")["status"] == "succeeded"
    assert _server(cloud, "web1")["status"] == "SHUTOFF"
    assert drivers.bmc.power_state() == "off"
    assert len(drivers.functions.list()) == 4  # functions stay while the host is off

    assert cloud.act("POST", "/v1/instances/web1/start")["status"] == "succeeded"
    assert _server(cloud, "web1")["status"] == "ACTIVE" and drivers.bmc.power_state() == "on"
    for kind in ("hard", "soft"):
        op = cloud.act("POST", "/v1/instances/web1/reboot", {"type": kind})
        assert op["status"] == "succeeded" and _server(cloud, "web1")["status"] == "ACTIVE"

    assert cloud.act("DELETE", "/v1/instances/web1/volumes/data1")["status"] == "succeeded"
    assert cloud.call("GET", "/v1/volumes/data1")["status"] == "available"
    assert len(drivers.storage.list()) == 1

    extra = ports[1]["id"]
    assert cloud.act("DELETE", f"/v1/instances/web1/nics/{extra}")["status"] == "succeeded"
    assert cloud.api.get(f"/v1/ports/{extra}").status_code == 404  # made for the NIC, gone with it
    assert [p.external_ids["iface-id"] for p in drivers.switch.list_ports("br-int")] == [ports[0]["id"]]

    op = cloud.act("DELETE", "/v1/instances/web1")
    assert op["status"] == "succeeded", op
    assert cloud.api.get("/v1/instances/web1").status_code == 404
    assert drivers.functions.list() == [] and drivers.switch.list_ports() == [] and drivers.storage.list() == []
    assert cloud.call("GET", "/v1/ports") == []
    assert [v["name"] for v in cloud.call("GET", "/v1/volumes")] == ["data1"]  # data volumes survive
    assert cloud.call("GET", f"/v1/nodes/{node}")["instance_count"] == 0
    history = cloud.call("GET", f"/v1/operations?instance={op['instance_id']}")
    assert [o["action"] for o in history][::-1] == ["create", "add_nic", "add_volume", "stop", "start", "reboot",
                                                    "reboot", "remove_volume", "remove_nic", "delete"]


def test_admin_pins_a_server_to_a_node_and_members_may_not(cloud):
    cloud.setup_basics()
    assert cloud.build("web2", node="dpu-bm-2")["status"] == "succeeded"
    assert _node_of(cloud, "web2") == "dpu-bm-2"
    cloud.call("POST", "/v1/projects", {"name": "acme"})
    member = cloud.call("POST", "/v1/tokens", {"project": "acme"})["token"]
    answer = cloud.api.post("/v1/instances", json={"name": "x", "flavor": "bm.small", "node": "dpu-bm-1"},
                            headers={"Authorization": f"Bearer {member}"})
    assert answer.status_code == 403


def test_a_bare_metal_node_takes_one_server_and_a_full_cloud_fails_cleanly(cloud):
    cloud.setup_basics()
    assert cloud.build("a")["status"] == "succeeded"
    assert cloud.build("b")["status"] == "succeeded"
    assert {_node_of(cloud, "a"), _node_of(cloud, "b")} == {"dpu-bm-1", "dpu-bm-2"}
    op = cloud.build("c")
    assert op["status"] == "failed"
    server = _server(cloud, "c")
    assert server["status"] == "ERROR" and "no valid node" in server["fault"]["message"]
    assert server["fault"]["step"] == "schedule" and server["ports"] == [] and server["volumes"] == []
    assert len(cloud.call("GET", "/v1/ports")) == 2  # the failed build left no port behind
    answer = cloud.api.post("/v1/instances/c/start")  # nothing to power: only delete makes sense
    assert answer.status_code == 409 and "has no node" in answer.json()["error"]["message"]
    assert cloud.act("DELETE", "/v1/instances/c")["status"] == "succeeded"


def test_concurrent_creates_never_share_the_last_node(cloud):
    cloud.setup_basics()
    results: list[dict] = []

    def create(name: str) -> None:
        results.append(cloud.build(name))

    threads = [threading.Thread(target=create, args=(f"race{i}",)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(op["status"] for op in results) == ["failed"] * 3 + ["succeeded"] * 2
    with cloud.context.sessions() as session:
        counts = [n.instance_count for n in session.scalars(select(Node))]
    assert counts == [1, 1]


def test_a_node_that_stops_reporting_is_down_and_not_scheduled(tmp_path, database_url):
    from harness import Cloud

    lab = Cloud(tmp_path, database_url, nodes=1, node_down_after=0.3)
    try:
        lab.setup_basics()
        import time
        time.sleep(0.5)
        node = lab.call("GET", "/v1/nodes/dpu-bm-1")
        assert node["status"] == "down" and node["total_cpu"] == 64 and node["dpu_model"] == "BF2"
        op = lab.build("late")
        assert op["status"] == "failed" and "down or not ready" in op["error"]
        lab.report()
        assert lab.call("GET", "/v1/nodes")[0]["status"] == "up"
    finally:
        lab.close()


def test_a_second_action_while_one_runs_is_a_conflict_and_a_new_worker_picks_it_up(cloud):
    from dpustack.controller.orchestrator import Orchestrator

    cloud.setup_basics()
    cloud.build("web1")
    cloud.orchestrator.stop()  # as if the controller went away with work queued
    first = cloud.call("POST", "/v1/instances/web1/stop", expect=202)
    second = cloud.api.post("/v1/instances/web1/start")
    assert second.status_code == 409 and "busy (stop)" in second.json()["error"]["message"]
    assert cloud.call("GET", f"/v1/operations/{first['id']}")["status"] == "pending"
    replacement = Orchestrator(cloud.context, workers=1)
    replacement.start()
    try:
        assert cloud.wait(first)["status"] == "succeeded"
        assert _server(cloud, "web1")["status"] == "SHUTOFF"
    finally:
        replacement.stop()


def test_a_host_shut_down_from_inside_shows_as_shutoff_after_the_next_report(cloud):
    cloud.setup_basics()
    cloud.build("web1", node="dpu-bm-1")
    agent = cloud.router.agents["dpu-bm-1"]
    assert agent.post("/v1/bmc/power_off").status_code == 200  # the tenant ran `shutdown -h now`
    cloud.report("dpu-bm-1")
    assert _server(cloud, "web1")["status"] == "SHUTOFF"
    node = cloud.call("GET", "/v1/nodes/dpu-bm-1")
    assert node["instances"] == [{"uuid": _server(cloud, "web1")["id"], "status": "down"}]


def test_the_openapi_document_describes_the_api(cloud):
    paths = cloud.api.get("/openapi.json").json()["paths"]
    assert {"/v1/instances", "/v1/instances/{ref}/nics/{port_id}", "/v1/nodes/report",
            "/v1/operations/{operation_id}"} <= set(paths)
