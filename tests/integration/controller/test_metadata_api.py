"""The metadata service through the controller API, asked as the metadata proxy of a node's agent would,
and the admin password a user sets for the host's next boot (API and CLI).

Agents that proxy metadata hold a token named after their node's hostname (as
`dpustack lab up` makes them); the harness's shared agent token names no node.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from dpustack import secrets
from dpustack.cli import context as cli_context
from dpustack.cli.main import app as cli_app
from dpustack.client import Client
from dpustack.db.models import Instance, Operation
from harness import ControllerTransport

KEY = (Path(__file__).parents[2] / "unit" / "controller" / "fixtures" / "ssh_keys" / "ed25519.pub").read_text().strip()
PASSWORD = "Tr0ub4dor&3-metadata"
USER_DATA = "#cloud-config\nruncmd:\n  - [touch, /var/lib/booted]\n"


def _agent_tokens(cloud):
    return {host: cloud.call("POST", "/v1/tokens", {"project": "admin", "role": "agent", "node": host})["token"]
            for host in cloud.router.agents}


def _ask(cloud, path, token, network_id, address):
    return cloud.api.get(f"/v1/metadata/{path}", headers={
        "Authorization": f"Bearer {token}", "X-Dpustack-Network-Id": network_id, "X-Forwarded-For": address})


def _blue_server(cloud, **extra):
    """A server of project blue, made with its key pair; returns (member token, server, its port)."""
    cloud.setup_basics()
    cloud.call("POST", "/v1/projects", {"name": "blue"})
    blue = cloud.call("POST", "/v1/tokens", {"project": "blue"})["token"]
    cloud.call("POST", "/v1/networks", {"name": "net1", "subnet": "10.20.0.0/24"}, token=blue)
    cloud.call("POST", "/v1/images", {"name": "centos"}, token=blue)
    answer = cloud.api.put("/v1/images/centos/file", content=b"\x00" * 510 + b"\x55\xaa",
                           headers={"Authorization": f"Bearer {blue}", "Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    cloud.call("POST", "/v1/keypairs", {"name": "alice", "public_key": KEY}, token=blue, expect=201)
    op = cloud.build("Web.01", token=blue, **extra)
    assert op["status"] == "succeeded", op
    server = cloud.call("GET", "/v1/instances/Web.01", token=blue)
    port = cloud.call("GET", f"/v1/ports/{server['ports'][0]}", token=blue)
    return blue, server, port


def test_the_agent_of_the_servers_node_reads_its_metadata(cloud, caplog):
    caplog.set_level(logging.DEBUG)
    blue, server, port = _blue_server(cloud, key_name="alice", admin_pass=PASSWORD, user_data=USER_DATA)
    agents = _agent_tokens(cloud)
    mine, address = agents[server["node"]], port["fixed_ips"][0]["ip_address"]

    assert _ask(cloud, "openstack", mine, port["network_id"], address).text == "latest"
    assert _ask(cloud, "openstack/latest", mine, port["network_id"], address).text == "meta_data.json\nuser_data"
    answer = _ask(cloud, "openstack/latest/meta_data.json", mine, port["network_id"], address)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "uuid": server["id"], "name": "Web.01", "hostname": "web-01", "project_id": server["project_id"],
        "launch_index": 0, "availability_zone": "nova", "meta": {}, "public_keys": {"alice": KEY},
        "keys": [{"name": "alice", "type": "ssh", "data": KEY}], "admin_pass": PASSWORD}
    user_data = _ask(cloud, "openstack/latest/user_data", mine, port["network_id"], address)
    assert user_data.status_code == 200 and user_data.content == USER_DATA.encode()
    assert user_data.headers["content-type"] == "application/octet-stream"
    assert _ask(cloud, "openstack/latest/vendor_data.json", mine, port["network_id"], address).status_code == 404

    # The user's view never holds the password; the database holds it only encrypted.
    shown = cloud.api.get(f"/v1/instances/{server['id']}", headers={"Authorization": f"Bearer {blue}"})
    assert shown.json()["key_name"] == "alice" and "admin_pass" not in shown.json()
    listed = cloud.api.get("/v1/instances", headers={"Authorization": f"Bearer {blue}"})
    assert listed.json()[0]["key_name"] == "alice"
    for text in (shown.text, listed.text):
        assert PASSWORD not in text
    with cloud.context.sessions() as session:
        row = session.scalars(select(Instance).where(Instance.id == server["id"])).one()
        assert row.admin_pass_encrypted and PASSWORD not in row.admin_pass_encrypted
        assert row.key_data == KEY and row.user_data == USER_DATA
        assert all(PASSWORD not in str(op.params) for op in session.scalars(select(Operation)))
    assert caplog.records, "the controller logged at all (otherwise this proves nothing)"
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


def test_only_the_servers_own_node_and_address_find_it(cloud):
    _, server, port = _blue_server(cloud, user_data=USER_DATA)
    agents = _agent_tokens(cloud)
    mine, address, network = agents[server["node"]], port["fixed_ips"][0]["ip_address"], port["network_id"]
    other = next(token for host, token in agents.items() if host != server["node"])
    for token, ip, net in ((other, address, network), (mine, "10.20.0.250", network),
                           (mine, address, cloud.call("GET", "/v1/networks/net1")["id"])):  # admin's net1
        answer = _ask(cloud, "openstack/latest/meta_data.json", token, net, ip)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["message"] == f"no instance at {ip} on network {net}"

    meta = _ask(cloud, "openstack/latest/meta_data.json", mine, network, address).json()
    assert "public_keys" not in meta and "keys" not in meta and "admin_pass" not in meta
    assert cloud.act("DELETE", f"/v1/instances/{server['id']}")["status"] == "succeeded"
    assert _ask(cloud, "openstack/latest/meta_data.json", mine, network, address).status_code == 404


def test_a_server_without_user_data_lists_and_serves_none(cloud):
    _, server, port = _blue_server(cloud, key_name="alice")
    mine = _agent_tokens(cloud)[server["node"]]
    ask = lambda path: _ask(cloud, path, mine, port["network_id"], port["fixed_ips"][0]["ip_address"])  # noqa: E731
    assert ask("openstack/latest").text == "meta_data.json"
    assert ask("openstack/latest/user_data").status_code == 404
    assert ask("openstack/latest/meta_data.json").json()["public_keys"] == {"alice": KEY}


def test_only_agent_tokens_may_ask_and_both_headers_are_needed(cloud):
    blue, server, port = _blue_server(cloud)
    mine, address, network = _agent_tokens(cloud)[server["node"]], port["fixed_ips"][0]["ip_address"], \
        port["network_id"]
    for token in (blue, cloud.admin_token):  # member, admin
        answer = _ask(cloud, "openstack/latest/meta_data.json", token, network, address)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", answer.text
    for headers, field in (({"X-Forwarded-For": address}, "X-Dpustack-Network-Id"),
                           ({"X-Dpustack-Network-Id": network}, "X-Forwarded-For"),
                           ({"X-Dpustack-Network-Id": network, "X-Forwarded-For": "10.0.0.1, " + address},
                            "X-Forwarded-For")):
        answer = cloud.api.get("/v1/metadata/openstack", headers={"Authorization": f"Bearer {mine}", **headers})
        assert answer.status_code == 400 and answer.json()["error"]["field"] == field, answer.text


def test_a_server_gets_only_a_key_pair_of_its_project_and_a_password_of_sane_length(cloud):
    blue, _, _ = _blue_server(cloud)
    cloud.call("POST", "/v1/keypairs", {"name": "admins-key", "public_key": KEY})  # the admin project's
    base = {"flavor": "bm.small", "networks": [{"network": "net1"}]}
    for extra, status, field in (({"key_name": "nope"}, 404, "key_name"),
                                 ({"key_name": "admins-key"}, 404, "key_name"),
                                 ({"admin_pass": ""}, 400, "admin_pass"),
                                 ({"admin_pass": "x" * 256}, 400, "admin_pass")):
        answer = cloud.api.post("/v1/instances", json={"name": "web2", **base, **extra},
                                headers={"Authorization": f"Bearer {blue}"})
        assert answer.status_code == status and answer.json()["error"]["field"] == field, (extra, answer.text)
        assert "x" * 256 not in answer.text
    assert [s["name"] for s in cloud.call("GET", "/v1/instances", token=blue)] == ["Web.01"]


def test_a_server_keeps_its_key_when_the_key_pair_is_deleted(cloud):
    blue, server, port = _blue_server(cloud, key_name="alice")
    cloud.call("DELETE", "/v1/keypairs/alice", token=blue, expect=204)
    mine = _agent_tokens(cloud)[server["node"]]
    meta = _ask(cloud, "openstack/latest/meta_data.json", mine, port["network_id"], port["fixed_ips"][0]["ip_address"])
    assert meta.json()["public_keys"] == {"alice": KEY}


# -- a new admin password (POST /v1/instances/{ref}/admin-password), taken at the host's next boot -----------
NEW_PASSWORD = "n3w-Pass phrase!"


def _set_password(cloud, ref, body, token):
    return cloud.api.post(f"/v1/instances/{ref}/admin-password", json=body,
                          headers={"Authorization": f"Bearer {token}"})


def _served_password(cloud, server, port):
    mine = _agent_tokens(cloud)[server["node"]]
    meta = _ask(cloud, "openstack/latest/meta_data.json", mine, port["network_id"], port["fixed_ips"][0]["ip_address"])
    assert meta.status_code == 200, meta.text
    return meta.json().get("admin_pass")


def _stored_password(cloud, server_id):
    with cloud.context.sessions() as session:
        return session.get_one(Instance, server_id).admin_pass_encrypted


def test_a_new_admin_password_is_stored_encrypted_and_served_with_no_operation(cloud, caplog):
    caplog.set_level(logging.DEBUG)
    blue, server, port = _blue_server(cloud, admin_pass=PASSWORD)
    with cloud.context.sessions() as session:
        operations = len(session.scalars(select(Operation)).all())

    answer = _set_password(cloud, "Web.01", {"new_password": NEW_PASSWORD}, blue)
    assert answer.status_code == 204 and answer.content == b"", answer.text
    assert _served_password(cloud, server, port) == NEW_PASSWORD
    sealed = _stored_password(cloud, server["id"])
    assert sealed and NEW_PASSWORD not in sealed and PASSWORD not in sealed
    assert secrets.decrypt(sealed, key_file=cloud.settings.secret_key_file) == NEW_PASSWORD

    # The same password again is fine; nothing ran on the node and the server did not change.
    assert _set_password(cloud, server["id"], {"new_password": NEW_PASSWORD}, blue).status_code == 204
    assert _served_password(cloud, server, port) == NEW_PASSWORD
    with cloud.context.sessions() as session:
        assert len(session.scalars(select(Operation)).all()) == operations
    shown = cloud.call("GET", f"/v1/instances/{server['id']}", token=blue)
    assert (shown["status"], shown["task_state"]) == ("ACTIVE", None) and "admin_pass" not in shown

    replaced = [r.getMessage() for r in caplog.records if "admin password of instance" in r.getMessage()]
    assert replaced == [f"admin password of instance {server['id']} (Web.01, project {server['project_id']}) "
                        "replaced; its host takes it at its next boot"] * 2
    assert not [r for r in caplog.records if NEW_PASSWORD in r.getMessage()]


def test_a_server_made_without_a_password_is_given_one(cloud):
    blue, server, port = _blue_server(cloud)
    assert _served_password(cloud, server, port) is None
    assert _set_password(cloud, "Web.01", {"new_password": NEW_PASSWORD}, blue).status_code == 204
    assert _served_password(cloud, server, port) == NEW_PASSWORD


def test_another_projects_server_is_not_found_and_keeps_its_password(cloud):
    blue, server, port = _blue_server(cloud, admin_pass=PASSWORD)
    cloud.call("POST", "/v1/projects", {"name": "red"})
    red = cloud.call("POST", "/v1/tokens", {"project": "red"})["token"]
    for ref in ("Web.01", server["id"]):
        answer = _set_password(cloud, ref, {"new_password": NEW_PASSWORD}, red)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == {"code": "not_found", "message": f"instance '{ref}' not found",
                                          "field": "instance"}
    assert _served_password(cloud, server, port) == PASSWORD
    # as for every instance endpoint, an admin may act on any project's server
    assert _set_password(cloud, server["id"], {"new_password": NEW_PASSWORD}, cloud.admin_token).status_code == 204
    assert _served_password(cloud, server, port) == NEW_PASSWORD


def test_bad_bodies_are_400_naming_the_field_and_never_echo_the_password(cloud):
    blue, server, port = _blue_server(cloud, admin_pass=PASSWORD)
    too_long = "y" * 256
    for body, field in (({}, "new_password"), ({"new_password": ""}, "new_password"),
                        ({"new_password": too_long}, "new_password"), ({"new_password": None}, "new_password"),
                        ({"new_password": 12345678}, "new_password"),
                        ({"new_password": NEW_PASSWORD, "password": NEW_PASSWORD}, "password"),
                        (None, "body")):
        answer = _set_password(cloud, "Web.01", body, blue)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "invalid_input"
        assert answer.json()["error"]["field"] == field, (body, answer.text)
        assert too_long not in answer.text and NEW_PASSWORD not in answer.text
    assert _served_password(cloud, server, port) == PASSWORD


def test_a_server_being_deleted_is_a_409_and_a_deleted_one_a_404(cloud):
    blue, server, port = _blue_server(cloud, admin_pass=PASSWORD)
    for status, expected in (("ERROR", 204), ("SHUTOFF", 204), ("DELETING", 409)):
        with cloud.context.transaction() as session:  # as a failed action, a stop, a delete in progress left it
            session.get_one(Instance, server["id"]).status = status
        answer = _set_password(cloud, "Web.01", {"new_password": f"{NEW_PASSWORD}-{status}"}, blue)
        assert answer.status_code == expected, (status, answer.text)
    assert answer.json()["error"] == {
        "code": "conflict", "field": "instance",
        "message": "instance 'Web.01' is being deleted: its admin password can no longer change"}
    assert _served_password(cloud, server, port) == f"{NEW_PASSWORD}-SHUTOFF"

    with cloud.context.transaction() as session:
        session.get_one(Instance, server["id"]).status = "ACTIVE"
    assert cloud.act("DELETE", f"/v1/instances/{server['id']}", token=blue)["status"] == "succeeded"
    answer = _set_password(cloud, server["id"], {"new_password": NEW_PASSWORD}, blue)
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "instance", answer.text


def test_the_cli_prompts_or_reads_stdin_and_the_host_is_served_that_password(cloud, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    blue, server, port = _blue_server(cloud, admin_pass=PASSWORD)
    monkeypatch.setattr(cli_context, "make_client",
                        lambda url, token: Client(url, token, transport=ControllerTransport(cloud.api)))
    env = {"DPUSTACK_URL": "http://controller.test", "DPUSTACK_TOKEN": blue, "COLUMNS": "200"}
    run = lambda *args, given: CliRunner().invoke(cli_app, ["server", "set-password", *args], env=env,  # noqa: E731
                                                  input=given)

    prompted = run("Web.01", given=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert "takes it at its next boot (e.g. dpustack server reboot Web.01)" in prompted.stdout
    assert _served_password(cloud, server, port) == NEW_PASSWORD

    piped = run(server["id"], "--password-stdin", given="from-a-script 2\n")
    assert piped.exit_code == 0, piped.output
    assert _served_password(cloud, server, port) == "from-a-script 2"

    refused = run("Web.01", "--password-stdin", given="z" * 300 + "\n")
    assert refused.exit_code == 1 and "(field: new_password)" in refused.stderr
    assert _served_password(cloud, server, port) == "from-a-script 2"
    for result in (prompted, piped, refused):
        assert NEW_PASSWORD not in result.output and "from-a-script" not in result.output
        assert "z" * 300 not in result.output
    assert not [r for r in caplog.records if NEW_PASSWORD in r.getMessage() or "from-a-script" in r.getMessage()]
