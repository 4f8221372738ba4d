"""Key pairs through the controller API: create, read, delete, errors, and projects kept apart."""

from __future__ import annotations

from pathlib import Path

KEYS = Path(__file__).parents[2] / "unit" / "controller" / "fixtures" / "ssh_keys"
ED25519 = (KEYS / "ed25519.pub").read_text().strip()
RSA = (KEYS / "rsa.pub").read_text().strip()
ED25519_FINGERPRINT = "SHA256:jCpXa4rwCm87tjcVlGFDXXNyMOQM4mfYqh0v5XDUu8g"


def _project(cloud, name):
    cloud.call("POST", "/v1/projects", {"name": name})
    return cloud.call("POST", "/v1/tokens", {"project": name})["token"]


def test_create_show_list_and_delete_a_key_pair(cloud):
    blue = _project(cloud, "blue")
    created = cloud.call("POST", "/v1/keypairs", {"name": "alice", "public_key": f"  {ED25519}\n"}, token=blue,
                         expect=201)
    assert {k: created[k] for k in ("name", "fingerprint", "public_key", "type")} == {
        "name": "alice", "fingerprint": ED25519_FINGERPRINT, "public_key": ED25519, "type": "ssh"}
    assert created["id"] and created["created_at"]
    assert cloud.call("GET", "/v1/keypairs/alice", token=blue) == created
    assert cloud.call("GET", f"/v1/keypairs/{created['id']}", token=blue) == created
    cloud.call("POST", "/v1/keypairs", {"name": "bob", "public_key": RSA}, token=blue, expect=201)
    assert [k["name"] for k in cloud.call("GET", "/v1/keypairs", token=blue)] == ["alice", "bob"]

    cloud.call("DELETE", "/v1/keypairs/alice", token=blue, expect=204)
    assert [k["name"] for k in cloud.call("GET", "/v1/keypairs", token=blue)] == ["bob"]
    gone = cloud.api.get(f"/v1/keypairs/{created['id']}", headers={"Authorization": f"Bearer {blue}"})
    assert gone.status_code == 404 and gone.json()["error"]["field"] == "keypair"


def test_bad_keys_and_taken_names_say_which_field(cloud):
    blue = _project(cloud, "blue")
    cloud.call("POST", "/v1/keypairs", {"name": "alice", "public_key": ED25519}, token=blue, expect=201)
    cases = [({"name": "alice", "public_key": RSA}, 409, "name"),
             ({"name": "k2", "public_key": "ssh-dss AAAAB3NzaC1kc3M="}, 400, "public_key"),
             ({"name": "k2", "public_key": "ssh-rsa " + ED25519.split()[1]}, 400, "public_key"),
             ({"name": "k2", "public_key": "ssh-ed25519 %%%"}, 400, "public_key"),
             ({"name": "k2", "public_key": ""}, 400, "public_key"),
             ({"name": "bad name!", "public_key": ED25519}, 400, "name"),
             ({"name": "k2"}, 400, "public_key")]
    for body, status, field in cases:
        answer = cloud.api.post("/v1/keypairs", json=body, headers={"Authorization": f"Bearer {blue}"})
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["field"] == field, (body, answer.text)
    assert [k["name"] for k in cloud.call("GET", "/v1/keypairs", token=blue)] == ["alice"]


def test_projects_see_only_their_own_key_pairs_and_admins_see_all(cloud):
    blue, red = _project(cloud, "blue"), _project(cloud, "red")
    mine = cloud.call("POST", "/v1/keypairs", {"name": "deploy", "public_key": ED25519}, token=blue, expect=201)
    theirs = cloud.call("POST", "/v1/keypairs", {"name": "deploy", "public_key": RSA}, token=red, expect=201)
    assert [k["id"] for k in cloud.call("GET", "/v1/keypairs", token=blue)] == [mine["id"]]
    assert cloud.call("GET", "/v1/keypairs/deploy", token=red)["id"] == theirs["id"]
    for method in ("GET", "DELETE"):
        answer = cloud.api.request(method, f"/v1/keypairs/{mine['id']}", headers={"Authorization": f"Bearer {red}"})
        assert answer.status_code == 404, answer.text
    assert {k["id"] for k in cloud.call("GET", "/v1/keypairs")} == {mine["id"], theirs["id"]}  # admin
    assert cloud.call("GET", "/v1/keypairs/deploy", token=blue)["id"] == mine["id"]  # still there
    agent = cloud.api.get("/v1/keypairs", headers={"Authorization": f"Bearer {cloud.agent_token()}"})
    assert agent.status_code == 403
