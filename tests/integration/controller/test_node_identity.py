"""A node's identity is bound to its credentials: what a compromised DPU can and cannot do, enrolment,
maintenance, removal and credential rotation, through the real controller and agent apps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dpustack.db.models import Token


def _report(cloud, agent: str, **changes: Any) -> dict[str, Any]:
    """The report the agent of node `agent` would send, with `changes`."""
    status = cloud.router.agents[agent].get("/v1/status").json()
    report = {k: status[k] for k in ("hostname", "ready", "node_type", "dpu_model", "total_cpu", "used_cpu",
                                     "total_mem", "used_mem", "instances", "agent_url")}
    return {**report, **changes}


def _post_report(cloud, report: dict[str, Any], token: str):
    return cloud.api.post("/v1/nodes/report", json=report, headers={"Authorization": f"Bearer {token}"})


def test_an_agent_token_reports_only_for_its_own_node(cloud):
    stolen = cloud.agent_token("dpu-bm-1")
    for hostname in ("dpu-bm-2", "evil-giant"):  # another node, and a new one with a huge host
        report = _report(cloud, "dpu-bm-1", hostname=hostname, total_cpu=100000, total_mem=2**30,
                         agent_url="http://attacker.invalid")
        answer = _post_report(cloud, report, stolen)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["field"] == "hostname"
    nodes = {n["hostname"]: n for n in cloud.call("GET", "/v1/nodes")}
    assert sorted(nodes) == ["dpu-bm-1", "dpu-bm-2"]
    assert nodes["dpu-bm-2"]["agent_url"] == "http://dpu-bm-2" and nodes["dpu-bm-2"]["total_cpu"] == 64


def test_a_fake_node_never_gets_a_server_nor_the_controller_credential(cloud):
    cloud.setup_basics()
    _post_report(cloud, _report(cloud, "dpu-bm-1", hostname="evil", total_cpu=9999), cloud.agent_token("dpu-bm-1"))
    ops = [cloud.build(f"s{i}") for i in range(2)]
    assert [op["status"] for op in ops] == ["succeeded", "succeeded"]
    assert {cloud.call("GET", f"/v1/instances/s{i}")["node"] for i in range(2)} == {"dpu-bm-1", "dpu-bm-2"}


def test_an_agent_token_is_issued_for_one_enrolled_node(cloud):
    answer = cloud.api.post("/v1/tokens", json={"project": "admin", "role": "agent"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "node"
    answer = cloud.api.post("/v1/tokens", json={"project": "admin", "role": "agent", "node": "nowhere"})
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "node"
    answer = cloud.api.post("/v1/tokens", json={"project": "admin", "role": "member", "node": "dpu-bm-1"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "node"
    token = cloud.call("POST", "/v1/tokens", {"project": "admin", "role": "agent", "node": "dpu-bm-2"}, expect=201)
    assert token["node_id"] == cloud.call("GET", "/v1/nodes/dpu-bm-2")["id"]
    assert _post_report(cloud, _report(cloud, "dpu-bm-2"), token["token"]).status_code == 200
    assert _post_report(cloud, _report(cloud, "dpu-bm-1"), token["token"]).status_code == 403


def test_enrolment_shows_the_pair_once_and_the_node_waits_until_it_reports(cloud):
    enrolled = cloud.call("POST", "/v1/nodes", {"hostname": "dpu-bm-9"}, expect=201)
    assert len(enrolled["controller_credential_sha256"]) == 64 and enrolled["report_token"]
    assert enrolled["node"]["status"] == "enrolled" and enrolled["node"]["joined_at"] is None
    assert cloud.api.post("/v1/nodes", json={"hostname": "dpu-bm-9"}).json()["error"]["field"] == "hostname"
    shown = cloud.call("GET", "/v1/nodes/dpu-bm-9")
    assert "report_token" not in shown and "controller_credential_sha256" not in shown
    with cloud.context.sessions() as session:  # stored only hashed
        assert enrolled["report_token"] not in session.scalars(select(Token.token_hash)).all()
    cloud.add_node("dpu-bm-3")  # the harness enrolls, then the agent reports
    assert cloud.call("GET", "/v1/nodes/dpu-bm-3")["status"] == "up"


def test_one_nodes_controller_credential_opens_no_other_agent(cloud):
    one = cloud.controller_credential("dpu-bm-1")
    assert one != cloud.controller_credential("dpu-bm-2")
    other = cloud.router.agents["dpu-bm-2"]
    answer = other.post("/v1/instances/x/stop", headers={"Authorization": f"Bearer {one}"})
    assert answer.status_code == 401
    agent_token = cloud.agent_token("dpu-bm-1")  # nor does the node's own report token
    assert other.get("/v1/status", headers={"Authorization": f"Bearer {agent_token}"}).status_code == 401


def test_a_node_in_maintenance_is_never_scheduled_and_comes_back(cloud):
    cloud.setup_basics()
    node = cloud.call("PATCH", "/v1/nodes/dpu-bm-1", {"maintenance": True})
    assert node["maintenance"] is True
    op = cloud.build("pinned", node="dpu-bm-1")
    assert op["status"] == "failed" and "in maintenance" in cloud.call("GET", "/v1/instances/pinned")["fault"][
        "message"]
    assert cloud.build("free")["status"] == "succeeded"
    assert cloud.call("GET", "/v1/instances/free")["node"] == "dpu-bm-2"
    cloud.call("PATCH", "/v1/nodes/dpu-bm-1", {"maintenance": False})
    assert cloud.build("again", node="dpu-bm-1")["status"] == "succeeded"
    answer = cloud.api.patch("/v1/nodes/dpu-bm-1", json={"maintenance": "sometimes"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "maintenance"


def test_a_node_with_instances_is_not_deleted_and_an_empty_one_is_with_its_tokens(cloud):
    cloud.setup_basics()
    assert cloud.build("web1", node="dpu-bm-1")["status"] == "succeeded"
    answer = cloud.api.delete("/v1/nodes/dpu-bm-1")
    assert answer.status_code == 409 and answer.json()["error"]["field"] == "node"
    assert "web1" in answer.json()["error"]["message"]
    token = cloud.agent_token("dpu-bm-2")
    assert cloud.api.delete("/v1/nodes/dpu-bm-2").status_code == 204
    assert [n["hostname"] for n in cloud.call("GET", "/v1/nodes")] == ["dpu-bm-1"]
    assert _post_report(cloud, _report(cloud, "dpu-bm-2"), token).status_code == 401
    assert cloud.api.delete("/v1/nodes/dpu-bm-2").status_code == 404


def test_only_admins_manage_nodes(cloud):
    cloud.call("POST", "/v1/projects", {"name": "acme"})
    member = cloud.call("POST", "/v1/tokens", {"project": "acme"})["token"]
    for method, path, body in (("POST", "/v1/nodes", {"hostname": "x"}), ("PATCH", "/v1/nodes/dpu-bm-1",
                                                                         {"maintenance": True}),
                               ("DELETE", "/v1/nodes/dpu-bm-1", None),
                               ("POST", "/v1/nodes/dpu-bm-1/rotate-credentials", None)):
        for token in (member, cloud.agent_token("dpu-bm-1")):
            answer = cloud.api.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 403, (method, path, answer.text)


def test_rotation_replaces_both_credentials_without_a_gap(cloud):
    cloud.setup_basics()
    old_token, old_credential = cloud.agent_token("dpu-bm-1"), cloud.controller_credential("dpu-bm-1")
    node = cloud.call("POST", "/v1/nodes/dpu-bm-1/rotate-credentials")
    assert node["hostname"] == "dpu-bm-1"

    new_token, new_credential = cloud.agent_token("dpu-bm-1"), cloud.controller_credential("dpu-bm-1")
    assert new_token != old_token and new_credential != old_credential
    assert _post_report(cloud, _report(cloud, "dpu-bm-1"), old_token).status_code == 401  # revoked
    cloud.report("dpu-bm-1")  # the agent reports with its new token by itself
    assert cloud.build("after", node="dpu-bm-1")["status"] == "succeeded"  # the controller uses the new one
    agent = cloud.router.agents["dpu-bm-1"]
    assert agent.get("/v1/status", headers={"Authorization": f"Bearer {new_credential}"}).status_code == 200
    # requests already on their way with the old credential still pass for a short grace period only
    assert agent.get("/v1/status", headers={"Authorization": f"Bearer {old_credential}"}).status_code == 200
    # the agent kept the new pair on disk: a restarted agent still speaks with the controller
    saved = (cloud.tmp_path / "dpu-bm-1" / "credentials.json").read_text()
    assert new_token in saved and new_credential not in saved and old_credential not in saved


def test_a_rotation_the_agent_never_took_changes_nothing(cloud):
    old_token, old_credential = cloud.agent_token("dpu-bm-1"), cloud.controller_credential("dpu-bm-1")
    with cloud.context.sessions() as session:
        tokens_before = len(session.scalars(select(Token.id)).all())
    cloud.router.down.add("dpu-bm-1")
    answer = cloud.api.post("/v1/nodes/dpu-bm-1/rotate-credentials")
    assert answer.status_code == 502, answer.text
    assert "dpu-bm-1" in answer.json()["error"]["message"]
    cloud.router.down.discard("dpu-bm-1")
    assert cloud.controller_credential("dpu-bm-1") == old_credential
    assert _post_report(cloud, _report(cloud, "dpu-bm-1"), old_token).status_code == 200
    with cloud.context.sessions() as session:
        assert len(session.scalars(select(Token.id)).all()) == tokens_before


def test_a_gone_node_is_deleted_with_force_its_instances_forgotten_and_its_capacity_gone(cloud):
    cloud.setup_basics()
    assert cloud.build("web1", node="dpu-bm-1")["status"] == "succeeded"
    server = cloud.call("GET", "/v1/instances/web1")
    cloud.router.down.add("dpu-bm-1")  # the node is gone for good
    assert cloud.api.delete("/v1/nodes/dpu-bm-1?force=true").status_code == 204
    assert [n["hostname"] for n in cloud.call("GET", "/v1/nodes")] == ["dpu-bm-2"]
    assert "web1" not in [s["name"] for s in cloud.call("GET", "/v1/instances")]
    assert cloud.call("GET", "/v1/ports") == []  # the server's port went with it
    assert server["volumes"][0] not in [v["id"] for v in cloud.call("GET", "/v1/volumes")]
    assert cloud.build("web1", node="dpu-bm-2")["status"] == "succeeded"  # the name and address are free again
