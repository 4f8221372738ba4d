"""What every caller of the controller API notices: auth, errors, validation, project isolation."""

from __future__ import annotations

import stat

from sqlalchemy import select

from dpustack.db.models import Instance, Operation, Token


def test_every_endpoint_but_health_needs_a_token(cloud):
    api = cloud.api
    assert api.get("/healthz", headers={"Authorization": ""}).json() == {"status": "ok"}
    for path in ("/v1/instances", "/v1/nodes", "/v1/flavors", "/v1/operations", "/v1/volumes"):
        answer = api.get(path, headers={"Authorization": ""})
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
    answer = api.get("/v1/instances", headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 401


def test_admin_token_is_written_private_and_stored_only_hashed(cloud):
    token_file = cloud.settings.home / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    with cloud.context.sessions() as session:
        hashes = session.scalars(select(Token.token_hash)).all()
    assert cloud.admin_token not in hashes and len(hashes) == 3  # admin + one agent token per node, all hashed
    assert cloud.call("GET", "/v1/whoami") == {"project_id": cloud.call("GET", "/v1/whoami")["project_id"],
                                               "project_name": "admin", "role": "admin"}


def test_roles_limit_what_a_token_may_do(cloud):
    cloud.call("POST", "/v1/projects", {"name": "acme"})
    member = cloud.call("POST", "/v1/tokens", {"project": "acme", "role": "member"})["token"]
    answer = cloud.api.post("/v1/flavors", json={"name": "x", "vcpus": 1, "ram": 1, "disk": 1, "type": "bm"},
                            headers={"Authorization": f"Bearer {member}"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    assert cloud.api.get("/v1/nodes", headers={"Authorization": f"Bearer {member}"}).status_code == 403
    agent = cloud.api.get("/v1/instances", headers={"Authorization": f"Bearer {cloud.agent_token()}"})
    assert agent.status_code == 403


def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(cloud):
    cloud.setup_basics()
    cases = [
        ("POST", "/v1/flavors", {"name": "f", "vcpus": 0, "ram": 1, "disk": 1, "type": "bm"}, 400, "vcpus"),
        ("POST", "/v1/flavors", {"name": "f", "vcpus": 1, "ram": 1, "disk": 1, "type": "gpu"}, 400, "type"),
        ("POST", "/v1/networks", {"name": "n2", "subnet": "10.0.0.300/24"}, 400, "subnet"),
        ("POST", "/v1/instances", {"name": "a", "image": "centos"}, 400, "flavor"),
        ("POST", "/v1/instances", {"name": "a", "flavor": "bm.small", "networks": [{"network": "nope"}]},
         404, "networks.0.network"),
        ("POST", "/v1/instances", {"name": "a", "flavor": "bm.small", "networks": [{}]}, 400, "networks.0"),
        ("POST", "/v1/instances", {"name": "a", "flavor": "nope"}, 404, "flavor"),
        ("POST", "/v1/instances", {"name": "bad name!", "flavor": "bm.small"}, 400, "name"),
        ("POST", "/v1/volumes", {"name": "v", "size": -1}, 400, "size"),
        ("POST", "/v1/ports", {"network": "net1", "mac": "zz"}, 400, "mac"),
        ("POST", "/v1/instances/nope/reboot", {"type": "sideways"}, 400, "type"),
    ]
    for method, path, body, status, field in cases:
        answer = cloud.api.request(method, path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.json()["error"]["field"] == field, (path, body, answer.text)
    with cloud.context.sessions() as session:
        assert session.scalars(select(Instance)).all() == []
        assert session.scalars(select(Operation)).all() == []


def test_projects_see_only_their_own_resources(cloud):
    cloud.setup_basics()
    cloud.call("POST", "/v1/projects", {"name": "blue"})
    cloud.call("POST", "/v1/projects", {"name": "red"})
    blue = cloud.call("POST", "/v1/tokens", {"project": "blue"})["token"]
    red = cloud.call("POST", "/v1/tokens", {"project": "red"})["token"]
    net = cloud.call("POST", "/v1/networks", {"name": "private", "subnet": "192.168.5.0/24"}, token=blue)
    vol = cloud.call("POST", "/v1/volumes", {"name": "secret", "size": 1}, token=blue)
    assert [n["name"] for n in cloud.call("GET", "/v1/networks", token=red)] == []
    assert cloud.call("GET", "/v1/volumes", token=red) == []
    for path in (f"/v1/networks/{net['id']}", f"/v1/volumes/{vol['id']}", "/v1/networks/private"):
        answer = cloud.api.get(path, headers={"Authorization": f"Bearer {red}"})
        assert answer.status_code == 404, path
    answer = cloud.api.delete(f"/v1/volumes/{vol['id']}", headers={"Authorization": f"Bearer {red}"})
    assert answer.status_code == 404
    # The owner still sees them; an admin sees everything.
    assert [n["name"] for n in cloud.call("GET", "/v1/networks", token=blue)] == ["private"]
    assert "private" in [n["name"] for n in cloud.call("GET", "/v1/networks")]


def test_names_are_unique_per_project(cloud):
    cloud.call("POST", "/v1/networks", {"name": "dup"})
    answer = cloud.api.post("/v1/networks", json={"name": "dup"})
    assert answer.status_code == 409 and answer.json()["error"]["field"] == "name"


def test_image_upload_records_size_and_checksum(cloud):
    cloud.setup_basics(image_bytes=b"abc")
    image = cloud.call("GET", "/v1/images/centos")
    assert image["status"] == "active" and image["size"] == 3
    assert image["checksum"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    again = cloud.api.put("/v1/images/centos/file", content=b"x")
    assert again.status_code == 409


def test_ports_get_distinct_addresses_from_the_subnet(cloud):
    cloud.call("POST", "/v1/networks", {"name": "n", "subnet": "10.9.0.0/29"})
    addresses = [cloud.call("POST", "/v1/ports", {"network": "n"})["fixed_ips"][0]["ip_address"]
                 for _ in range(5)]
    assert addresses == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]  # .1 is the gateway
    answer = cloud.api.post("/v1/ports", json={"network": "n"})
    assert answer.status_code == 409 and "no free address" in answer.json()["error"]["message"]


def test_times_are_utc_with_their_zone(cloud):
    project = cloud.call("POST", "/v1/projects", {"name": "tz"})
    assert project["created_at"].endswith(("+00:00", "Z"))


def test_numbers_beyond_what_can_be_stored_are_refused_by_field(cloud):
    answer = cloud.api.post("/v1/flavors", json={"name": "big", "vcpus": 1, "ram": 2**63, "disk": 1, "type": "bm"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "ram"
    answer = cloud.api.post("/v1/volumes", json={"name": "huge", "size": 65536})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "size"
    report = {"hostname": "x", "ready": True, "node_type": "bm", "total_cpu": 2**63, "used_cpu": 0,
              "total_mem": 1, "used_mem": 0, "agent_url": "http://x"}
    answer = cloud.api.post("/v1/nodes/report", json=report, headers={"Authorization": f"Bearer {cloud.agent_token()}"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "total_cpu"


def test_only_agents_report_nodes(cloud):
    report = {"hostname": "dpu-bm-1", "ready": True, "node_type": "vm", "total_cpu": 1, "used_cpu": 0,
              "total_mem": 1, "used_mem": 0, "agent_url": "http://elsewhere"}
    assert cloud.api.post("/v1/nodes/report", json=report).status_code == 403  # even an admin
    assert cloud.call("GET", "/v1/nodes/dpu-bm-1")["node_type"] == "bm"


def test_a_body_that_is_not_json_is_a_400_about_the_body(cloud):
    answer = cloud.api.post("/v1/networks", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "body"


def test_a_volume_whose_file_cannot_be_made_ends_in_error_saying_why_and_leaves_no_data(cloud):
    volumes_dir = cloud.settings.volumes_dir
    volumes_dir.rmdir()
    try:
        volume = cloud.call("POST", "/v1/volumes", {"name": "v1", "size": 1}, expect=202)
        operation = cloud.wait({"id": volume["operation_id"]})
    finally:
        volumes_dir.mkdir()
    assert operation["status"] == "failed" and "cannot create a 1 GiB volume" in operation["error"]
    failed = cloud.call("GET", "/v1/volumes/v1")
    assert failed["status"] == "error" and "cannot create a 1 GiB volume" in failed["fault"]["message"]
    assert failed["fault"]["operation_id"] == operation["id"] and failed["operation_id"] is None
    assert list(volumes_dir.iterdir()) == []
    cloud.call("DELETE", "/v1/volumes/v1", expect=204)  # a volume in error can be deleted
    assert cloud.call("GET", "/v1/volumes") == []


def test_an_image_being_uploaded_cannot_be_deleted(cloud):
    from dpustack.db.models import Image

    cloud.call("POST", "/v1/images", {"name": "slow"})
    with cloud.context.transaction() as session:  # as while a PUT /file is streaming
        session.scalars(select(Image)).one().status = "saving"
    answer = cloud.api.delete("/v1/images/slow")
    assert answer.status_code == 409 and "being uploaded" in answer.json()["error"]["message"]
