"""`dpustack keypair …` and the metadata options of `server create`: what is sent, and what is shown."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from cli_fake_api import FakeApi, Invoke

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK6SOToONt1bUQqqgAiLSvz6 alice@laptop"
FINGERPRINT = "SHA256:jCpXa4rwCm87tjcVlGFDXXNyMOQM4mfYqh0v5XDUu8g"


@pytest.fixture
def keypairs(fake: FakeApi) -> FakeApi:
    """The fake API, taught key pairs: create checks the key's type and the name, list/show/delete are generic."""
    fake.store["keypairs"] = {}

    def create(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not body["public_key"].startswith("ssh-"):
            return httpx.Response(400, json={"error": {"code": "invalid_input", "field": "public_key",
                                                       "message": "public_key: not an OpenSSH public key"}})
        if fake.find("keypairs", body["name"]) is not None:
            return httpx.Response(409, json={"error": {"code": "conflict", "field": "name",
                                                       "message": f"a key pair named '{body['name']}' already exists"}})
        keypair = fake.add("keypairs", type="ssh", fingerprint=FINGERPRINT, project_id="p1", **body)
        return httpx.Response(201, json=keypair)

    def delete(request: httpx.Request, ref: str) -> httpx.Response:
        return fake.delete_simple(request, "keypairs", ref)

    fake.routes.append(("POST", re.compile(r"/v1/keypairs$"), create))
    fake.routes.append(("DELETE", re.compile(r"/v1/keypairs/([^/]+)$"), delete))
    return fake


def test_create_reads_the_key_file_then_list_shows_the_fingerprint(dpustack: Invoke, keypairs: FakeApi,
                                                                     tmp_path) -> None:
    key_file = tmp_path / "id_ed25519.pub"
    key_file.write_text(KEY + "\n")
    created = dpustack("keypair", "create", "alice", "--public-key", str(key_file))
    assert created.exit_code == 0, created.output
    assert json.loads(keypairs.requests[-1].content) == {"name": "alice", "public_key": KEY}
    assert FINGERPRINT in created.stdout and "alice@laptop" in created.stdout

    listing = dpustack("keypair", "list")
    assert listing.exit_code == 0 and "alice" in listing.stdout and FINGERPRINT in listing.stdout
    as_json = json.loads(dpustack("keypair", "list", "-f", "json").stdout)
    assert [(k["name"], k["fingerprint"]) for k in as_json] == [("alice", FINGERPRINT)]
    assert json.loads(dpustack("keypair", "show", "alice", "-f", "json").stdout)["public_key"] == KEY

    deleted = dpustack("keypair", "delete", "alice")
    assert deleted.exit_code == 0 and keypairs.requests[-1].method == "DELETE"
    assert json.loads(dpustack("keypair", "list", "-f", "json").stdout) == []


def test_create_reports_a_missing_file_a_bad_key_and_a_taken_name(dpustack: Invoke, keypairs: FakeApi,
                                                                  tmp_path) -> None:
    missing = dpustack("keypair", "create", "alice", "--public-key", str(tmp_path / "nope.pub"))
    assert missing.exit_code == 1 and "--public-key: cannot read" in missing.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    refused = dpustack("keypair", "create", "alice", "--public-key", str(bad))
    assert refused.exit_code == 1 and "(field: public_key)" in refused.stderr
    good = tmp_path / "good.pub"
    good.write_text(KEY)
    assert dpustack("keypair", "create", "alice", "--public-key", str(good)).exit_code == 0
    taken = dpustack("keypair", "create", "alice", "--public-key", str(good))
    assert taken.exit_code == 1 and "(field: name)" in taken.stderr


def test_server_create_sends_key_name_password_and_user_data_from_a_file(dpustack: Invoke, fake: FakeApi,
                                                                         tmp_path) -> None:
    fake.add("flavors", name="bm.small", vcpus=8, ram=16384, disk=40, type="bm", extra_specs={})
    cloud_config = tmp_path / "init.yaml"
    cloud_config.write_text("#cloud-config\nruncmd: [touch /ok]\n")
    result = dpustack("server", "create", "web1", "--flavor", "bm.small", "--network", "net1", "--key-name", "alice",
                      "--admin-pass", "pa55word", "--user-data-file", str(cloud_config))
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {
        "name": "web1", "flavor": "bm.small", "networks": [{"network": "net1"}], "key_name": "alice",
        "admin_pass": "pa55word", "user_data": "#cloud-config\nruncmd: [touch /ok]\n"}


def test_server_create_takes_user_data_inline_or_from_a_file_not_both(dpustack: Invoke, fake: FakeApi,
                                                                      tmp_path) -> None:
    cloud_config = tmp_path / "init.yaml"
    cloud_config.write_text("#cloud-config\n")
    both = dpustack("server", "create", "web1", "--flavor", "bm.small", "--user-data", "x",
                    "--user-data-file", str(cloud_config))
    assert both.exit_code == 2 and "give --user-data or --user-data-file, not both" in both.output
    missing = dpustack("server", "create", "web1", "--flavor", "bm.small", "--user-data-file",
                       str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1 and "--user-data-file: cannot read" in missing.stderr
    assert fake.requests == []
