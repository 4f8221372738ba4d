"""agent.toml is validated at start; a bad file fails with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpustack.agent.config import load_config
from dpustack.errors import InvalidInput

SAMPLE = """
hostname = "dpu-node-7"
insecure = true
node_type = "bm"
dpu_model = "BF2"
bind = "0.0.0.0:8801"
state_dir = "/var/lib/dpustack-agent"
report_interval = 5
reconcile_interval = 30
bridge = "br-int"

[controller]
url = "http://10.0.0.2:8800"
token = "agent-role-token"

[api]
controller_credential_sha256 = "c1642e5b544401b66b42479ef55919b9a732591acdc91090cd56e709e32afbd8"

[drivers]
functions = "memory"
switch = "memory"
storage = "memory"
bmc = "memory"

[bmc]
address = "10.1.0.7"
username = "admin"
password = "bmc-password"

[bmc.memory]
cpu = 96
mem = 393216
serial_number = "SN-0007"
model = "PowerEdge R760"
state_file = "bmc-power.json"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_full_sample_loads(tmp_path):
    config = load_config(_write(tmp_path, SAMPLE))

    assert (config.hostname, config.node_type, config.dpu_model) == ("dpu-node-7", "bm", "BF2")
    assert (config.bind_host, config.bind_port) == ("0.0.0.0", 8801)
    assert config.advertise_url == "http://dpu-node-7:8801"  # a wildcard bind advertises the hostname
    bmc = config.driver_choices["bmc"]
    assert bmc.name == "memory"
    assert bmc.options["state_file"] == Path("/var/lib/dpustack-agent/bmc-power.json")
    assert bmc.options["cpu"] == 96


def test_defaults_fill_in_everything_but_the_controller_and_the_api_credential(tmp_path):
    config = load_config(_write(tmp_path, 'insecure = true\n[controller]\nurl = "http://c:8800"\ntoken = "t"\n'
                                          '[api]\ncontroller_credential_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"\n'))

    assert (config.bind, config.advertise_url, config.bridge) == ("127.0.0.1:8801", "http://127.0.0.1:8801", "br-int")
    assert (config.report_interval, config.reconcile_interval) == (5, 30)
    assert config.drivers.model_dump() == {"functions": "memory", "switch": "memory", "storage": "memory",
                                           "bmc": "memory", "inventory": "sysfs", "hypervisor": None}
    assert config.pci is None  # no [pci] section: the inventory role is off


def test_secrets_never_show_in_the_config_repr(tmp_path):
    text = repr(load_config(_write(tmp_path, SAMPLE)))

    for secret in ("agent-role-token", "controller-secret", "bmc-password"):
        assert secret not in text


@pytest.mark.parametrize("edit, field", [
    (("[controller]\nurl = \"http://10.0.0.2:8800\"\n", "[controller]\n"), "controller.url"),
    (("report_interval = 5", "report_interval = -1"), "report_interval"),
    (("node_type = \"bm\"", "node_type = \"vm\""), "drivers.hypervisor"),  # a vm node needs a hypervisor driver
    (("node_type = \"bm\"", "node_type = \"xx\""), "node_type"),
    (("bind = \"0.0.0.0:8801\"", "bind = \"8801\""), "bind"),
    (("cpu = 96", "cpu = \"many\""), "bmc.memory.cpu"),
    (("bridge = \"br-int\"", "bridge = \"br-int\"\nbirdge = \"x\""), "birdge"),
    (("controller_credential_sha256 = \"c1642e5b544401b66b42479ef55919b9a732591acdc91090cd56e709e32afbd8\"", "controller_credential_sha256 = \"controller-secret\""),
     "api.controller_credential_sha256"),
    (("token = \"agent-role-token\"", "token = \"  \""), "controller.token"),
    (("insecure = true", "insecure = false"), "tls"),
])
def test_a_bad_field_fails_with_its_name(tmp_path, edit, field):
    old, new = edit
    assert old in SAMPLE

    with pytest.raises(InvalidInput) as caught:
        load_config(_write(tmp_path, SAMPLE.replace(old, new, 1)))

    assert caught.value.field == field
    assert f"agent.toml: {field}:" in caught.value.message


def test_broken_toml_and_a_missing_file_are_readable_errors(tmp_path):
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_config(_write(tmp_path, "hostname = "))
    with pytest.raises(InvalidInput, match="cannot read"):
        load_config(tmp_path / "missing.toml")
