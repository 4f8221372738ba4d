"""The metadata service's documents, hostnames and proxy headers, without a database."""

from __future__ import annotations

import json
import stat

import pytest

from dpustack import secrets
from dpustack.controller.services import instance_metadata
from dpustack.db.models import Instance
from dpustack.errors import InvalidInput, NotFound

UUID = "3f0c2a8e-6b1d-4c55-9a0e-2b7d9c1e4f10"
NET = "8a1f7d3c-0b9e-4e7a-a5c2-6d4b3e2f1a09"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK6SOToONt1bUQqqgAiLSvz6 alice@laptop"


def _instance(**fields) -> Instance:
    return Instance(**{"id": UUID, "name": "Web-01", "project_id": "p1", "user_data": "", **fields})


@pytest.mark.parametrize("name, hostname", [
    ("web-01", "web-01"),
    ("Web_01.example.COM", "web-01-example-com"),
    ("--edge--", "edge"),
    ("a" * 70, "a" * 63),
    ("a" * 62 + "_b", "a" * 62),  # cut at 63, then no '-' left at the end
    ("ÜBER server", "ber-server"),
    ("___", "instance-3f0c2a8e"),
    ("...", "instance-3f0c2a8e"),
])
def test_hostname_is_a_dns_label_made_from_the_name(name: str, hostname: str) -> None:
    assert instance_metadata.hostname_for(name, UUID) == hostname


def test_meta_data_has_the_key_and_password_only_when_set(tmp_path) -> None:
    key = secrets.ensure_key(tmp_path / "secret.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    bare = instance_metadata.meta_data(_instance(), key)
    assert bare == {"uuid": UUID, "name": "Web-01", "hostname": "web-01", "project_id": "p1", "launch_index": 0,
                    "availability_zone": "nova", "meta": {}}
    sealed = instance_metadata.seal_admin_pass("s3cret-pass", key)
    assert "s3cret-pass" not in sealed
    full = instance_metadata.meta_data(_instance(key_name="alice", key_data=KEY, admin_pass_encrypted=sealed), key)
    assert full["public_keys"] == {"alice": KEY}
    assert full["keys"] == [{"name": "alice", "type": "ssh", "data": KEY}]
    assert full["admin_pass"] == "s3cret-pass"


def test_a_password_sealed_under_another_key_is_left_out_and_logged_without_it(tmp_path, caplog) -> None:
    sealed = instance_metadata.seal_admin_pass("s3cret-pass", secrets.ensure_key(tmp_path / "old" / "secret.key"))
    data = instance_metadata.meta_data(_instance(admin_pass_encrypted=sealed), secrets.ensure_key(tmp_path / "new" / "secret.key"))
    assert "admin_pass" not in data
    assert "leaves out its admin password" in caplog.text and "s3cret-pass" not in caplog.text


def test_documents_follow_the_openstack_layout(tmp_path) -> None:
    key = secrets.ensure_key(tmp_path / "secret.key")
    with_data = _instance(user_data="#cloud-config\nruncmd: [touch /ok]\n")
    assert instance_metadata.document(with_data, "openstack", key) == instance_metadata.Document(b"latest", instance_metadata.TEXT)
    assert instance_metadata.document(with_data, "openstack/", key).body == b"latest"
    assert instance_metadata.document(with_data, "openstack/latest", key).body == b"meta_data.json\nuser_data"
    assert instance_metadata.document(_instance(), "openstack/latest", key).body == b"meta_data.json"
    meta = instance_metadata.document(with_data, "openstack/latest/meta_data.json", key)
    assert meta.media_type == "application/json" and json.loads(meta.body)["uuid"] == UUID
    user = instance_metadata.document(with_data, "openstack/latest/user_data", key)
    assert user == instance_metadata.Document(b"#cloud-config\nruncmd: [touch /ok]\n", "application/octet-stream")
    for path in ("openstack/latest/user_data", "openstack/2018-08-27/meta_data.json", "latest/meta-data",
                 "", "openstack/latest/meta_data.json/x"):
        with pytest.raises(NotFound):
            instance_metadata.document(_instance(), path, key)


def test_proxy_headers_name_one_network_and_one_ipv4_source() -> None:
    assert instance_metadata.parse_source(NET, "10.10.0.5") == (NET, "10.10.0.5")
    assert instance_metadata.parse_source(f" {NET.upper()} ", " 10.10.0.5 ") == (NET, "10.10.0.5")
    for network, source, field in [(None, "10.10.0.5", "X-Dpustack-Network-Id"),
                                   ("net1", "10.10.0.5", "X-Dpustack-Network-Id"),
                                   (NET, None, "X-Forwarded-For"),
                                   (NET, "10.10.0.300", "X-Forwarded-For"),
                                   (NET, "fe80::1", "X-Forwarded-For"),
                                   (NET, "10.0.0.9, 10.10.0.5", "X-Forwarded-For")]:
        with pytest.raises(InvalidInput) as caught:
            instance_metadata.parse_source(network, source)
        assert caught.value.field == field
