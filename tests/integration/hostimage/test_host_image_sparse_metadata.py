"""A lab host whose metadata has no password, no hostname (a name only), two keys and no user data: each step
says so, and root stays locked. A guest of its own (conftest's ``booted_host``, this module's metadata)."""

from __future__ import annotations

import pytest

from dpustack.lab import guest_agent

KEYS = {"one": "ssh-ed25519 AAAAone one@test", "two": "ssh-rsa AAAAtwo two@test\n"}


@pytest.fixture(scope="module")
def served() -> tuple[dict, None]:
    return {"uuid": "5d0c8a43-7a1b-4f55-8f0e-3c9d2b6e1a77", "name": "sparse-host", "public_keys": KEYS}, None


def test_the_steps_say_what_the_metadata_left_out(booted_host, network):
    steps = {step["step"]: step for step in booted_host.steps()}
    assert "failed" not in steps, booted_host.steps()
    assert steps["metadata"] == {"step": "metadata", "uuid": "5d0c8a43-7a1b-4f55-8f0e-3c9d2b6e1a77",
                                 "hostname": "sparse-host"}
    assert steps["hostname"] == {"step": "hostname", "hostname": "sparse-host"}
    assert steps["password"] == {"step": "password", "set": 0}
    assert steps["keys"] == {"step": "keys", "count": 2}
    assert steps["user-data"] == {"step": "user-data", "status": "none"}
    assert "ready" in steps
    assert "/openstack/latest/user_data" in network.requests  # asked once: a 404 is not retried
    assert network.requests.count("/openstack/latest/user_data") == 1

    status, output = guest_agent.run(booted_host.agent_socket, "cat /root/.ssh/authorized_keys; grep ^root: "
                                     "/etc/shadow; ls -l /etc/shadow /run/dpustack/meta_data.json", 20)
    lines = output.decode().splitlines()
    assert status == 0 and lines[:3] == ["ssh-ed25519 AAAAone one@test", "ssh-rsa AAAAtwo two@test",
                                         "root:*:19000:0:99999:7:::"]
    assert lines[3].startswith("-rw-------") and lines[4].startswith("-rw-------")
