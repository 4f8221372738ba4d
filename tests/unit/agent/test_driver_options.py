"""[switch.ovs] and [functions.lab] in agent.toml: validated at start, handed to the chosen driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpustack.agent.config import load_config
from dpustack.agent.hardware import load_drivers
from dpustack.drivers.bmc.memory import MemoryBmcDriver
from dpustack.drivers.functions.lab import LabFunctionDriver
from dpustack.drivers.functions.memory import MemoryFunctionDriver
from dpustack.drivers.hypervisor.libvirt import LibvirtHypervisorDriver
from dpustack.drivers.hypervisor.memory import MemoryHypervisorDriver
from dpustack.drivers.switch.memory import MemorySwitchDriver
from dpustack.drivers.switch.ovs import OvsSwitchDriver
from dpustack.errors import InvalidInput

BASE = """
state_dir = "/var/lib/dpustack-agent"
insecure = true

[controller]
url = "http://10.0.0.2:8800"
token = "agent-role-token"

[api]
controller_credential_sha256 = "c1642e5b544401b66b42479ef55919b9a732591acdc91090cd56e709e32afbd8"
"""

LAB_NODE = BASE + """
[drivers]
functions = "lab"
switch = "ovs"

[functions.lab]
host_netns = "lab-bm-1"
dpu_netns = "lab-dpu-1"
host_prefix = "eth"

[switch.ovs]
connection = "unix:/run/dpustack/dpu-1/db.sock"
timeout = 5
datapath_type = "netdev"
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(path)


def test_a_lab_node_gets_its_namespaces_and_its_ovsdb_socket(tmp_path):
    drivers = load_drivers(_load(tmp_path, LAB_NODE))

    assert isinstance(drivers.functions, LabFunctionDriver)
    assert (drivers.functions.host_netns, drivers.functions.dpu_netns, drivers.functions.host_prefix) == (
        "lab-bm-1", "lab-dpu-1", "eth")
    assert drivers.functions.state_dir == Path("/var/lib/dpustack-agent/functions")
    assert isinstance(drivers.switch, OvsSwitchDriver)
    assert (drivers.switch.connection, drivers.switch.timeout, drivers.switch.datapath_type) == (
        "unix:/run/dpustack/dpu-1/db.sock", 5.0, "netdev")
    assert drivers.switch.meters.rundir == Path("/run/dpustack/dpu-1")  # its <bridge>.mgmt sockets


def test_a_lab_host_machine_takes_its_uri_domain_and_vhost_dir_together(tmp_path):
    machine = ('host_prefix = "eth"\nmachine_uri = "qemu+unix:///system?socket=/srv/lab/bm-1/libvirt-sock"\n'
               'machine = "lab-bm-1"\nvhost_dir = "vhost"')
    drivers = load_drivers(_load(tmp_path, LAB_NODE.replace('host_prefix = "eth"', machine)))

    assert drivers.functions.machine is not None
    assert drivers.functions.machine.uri == "qemu+unix:///system?socket=/srv/lab/bm-1/libvirt-sock"
    assert drivers.functions.machine.name == "lab-bm-1"
    assert drivers.functions.machine.vhost_dir == Path("/var/lib/dpustack-agent/vhost")
    assert load_drivers(_load(tmp_path, LAB_NODE)).functions.machine is None


@pytest.mark.parametrize("given, missing", [
    ('machine_uri = "qemu:///system"', "machine"),
    ('machine = "lab-bm-1"\nvhost_dir = "/srv/vhost"', "machine_uri"),
    ('machine_uri = "qemu:///system"\nmachine = "lab-bm-1"', "vhost_dir"),
])
def test_the_host_machine_options_without_the_others_name_the_one_missing(tmp_path, given, missing):
    with pytest.raises(InvalidInput) as caught:
        _load(tmp_path, LAB_NODE.replace('host_prefix = "eth"', f'host_prefix = "eth"\n{given}'))

    assert caught.value.field == f"functions.lab.{missing}"
    assert "machine mode takes machine_uri, machine and vhost_dir together" in caught.value.message


def test_the_openflow_sockets_may_be_elsewhere_than_the_ovsdb_socket(tmp_path):
    config = _load(tmp_path, LAB_NODE + 'rundir = "/run/ovs-elsewhere"\n')
    assert load_drivers(config).switch.meters.rundir == Path("/run/ovs-elsewhere")
    tcp = _load(tmp_path, LAB_NODE.replace("unix:/run/dpustack/dpu-1/db.sock", "tcp:127.0.0.1:6640"))
    assert load_drivers(tcp).switch.meters.rundir == Path("/var/run/openvswitch")


def test_a_relative_function_state_dir_is_under_the_agents_state_dir(tmp_path):
    config = _load(tmp_path, LAB_NODE.replace('host_prefix = "eth"', 'state_dir = "lab-functions"'))

    assert config.driver_choices["functions"].options["state_dir"] == Path("/var/lib/dpustack-agent/lab-functions")


def test_the_ovs_options_default_to_the_systems_ovsdb_socket(tmp_path):
    config = _load(tmp_path, BASE + '[drivers]\nswitch = "ovs"\n')

    assert config.driver_choices["switch"].options == {
        "connection": "unix:/var/run/openvswitch/db.sock", "timeout": 10.0, "datapath_type": "netdev"}


def test_memory_drivers_get_no_options_and_ignore_the_tables_of_others(tmp_path):
    config = _load(tmp_path, LAB_NODE.replace('functions = "lab"', 'functions = "memory"')
                   .replace('switch = "ovs"', 'switch = "memory"'))

    drivers = load_drivers(config)

    assert isinstance(drivers.functions, MemoryFunctionDriver)
    assert isinstance(drivers.switch, MemorySwitchDriver)
    assert isinstance(drivers.bmc, MemoryBmcDriver)
    assert config.driver_choices["functions"].options == config.driver_choices["switch"].options == {}


@pytest.mark.parametrize("edit, field", [
    (('host_netns = "lab-bm-1"\n', ""), "functions.lab.host_netns"),
    (('dpu_netns = "lab-dpu-1"', 'dpu_netns = "lab-bm-1"'), "functions.lab.dpu_netns"),
    (('dpu_netns = "lab-dpu-1"', 'dpu_netns = "lab dpu"'), "functions.lab.dpu_netns"),
    (('host_prefix = "eth"', 'host_prefix = "hostnicprefix"'), "functions.lab.host_prefix"),
    (('host_prefix = "eth"', 'host_prefx = "eth"'), "functions.lab.host_prefx"),
    (('connection = "unix:/run/dpustack/dpu-1/db.sock"', 'connection = "/run/dpustack/dpu-1/db.sock"'),
     "switch.ovs.connection"),
    (('timeout = 5', 'timeout = 0'), "switch.ovs.timeout"),
    (('datapath_type = "netdev"', 'datapath_type = "dpdk"'), "switch.ovs.datapath_type"),
    (("[switch.ovs]", "[switch.ofs]"), "switch.ofs"),
])
def test_a_bad_driver_option_fails_with_its_name(tmp_path, edit, field):
    old, new = edit
    assert old in LAB_NODE

    with pytest.raises(InvalidInput) as caught:
        _load(tmp_path, LAB_NODE.replace(old, new, 1))

    assert caught.value.field == field
    assert f"agent.toml: {field}:" in caught.value.message


def test_the_lab_function_driver_without_its_table_names_the_missing_table(tmp_path):
    with pytest.raises(InvalidInput) as caught:
        _load(tmp_path, BASE + '[drivers]\nfunctions = "lab"\n')

    assert caught.value.field == "functions.lab"
    assert 'required when [drivers] functions = "lab"' in caught.value.message


# -- the hypervisor of a VM node's host ----------------------------------------------------------------
VM_BASE = 'node_type = "vm"\n' + BASE
HYPERVISOR = VM_BASE + """
[drivers]
hypervisor = "libvirt"

[hypervisor.libvirt]
uri = "qemu+tls://host-7/system"
reserved_cpus = "0-1,^1"
dedicated_cpus = "4-7"
reserved_memory_mib = 2048
"""


def test_without_a_hypervisor_driver_the_node_has_none(tmp_path):
    config = _load(tmp_path, BASE)

    assert "hypervisor" not in config.driver_choices
    assert load_drivers(config).hypervisor is None


def test_a_libvirt_hypervisor_gets_its_uri_and_reservation(tmp_path):
    config = _load(tmp_path, HYPERVISOR)

    assert config.driver_choices["hypervisor"] == ("libvirt", {"uri": "qemu+tls://host-7/system",
                                                               "migration_uri": "",
                                                               "reserved_cpus": "0-1,^1",
                                                               "dedicated_cpus": "4-7",
                                                               "reserved_memory_mib": 2048})
    drivers = load_drivers(config)
    assert isinstance(drivers.hypervisor, LibvirtHypervisorDriver) and drivers.hypervisor in drivers.all()
    assert drivers.hypervisor.migration_uri == "qemu+tls://host-7/system"  # other hosts reach it where it is


def test_a_memory_hypervisor_reports_the_cells_of_its_table(tmp_path):
    config = _load(tmp_path, VM_BASE + '[drivers]\nhypervisor = "memory"\n[[hypervisor.memory.cells]]\nid = 0\n'
                                    'cpus = [0, 1]\nmemory_mib = 1024\n')

    drivers = load_drivers(config)

    assert isinstance(drivers.hypervisor, MemoryHypervisorDriver) and drivers.hypervisor in drivers.all()
    assert [(c.id, c.cpus, c.memory_mib) for c in drivers.hypervisor.topology()] == [(0, [0, 1], 1024)]


@pytest.mark.parametrize("edit, field", [
    (('reserved_cpus = "0-1,^1"', 'reserved_cpus = "0-"'), "hypervisor.libvirt.reserved_cpus"),
    (('reserved_memory_mib = 2048', 'reserved_memory_mib = -1'), "hypervisor.libvirt.reserved_memory_mib"),
    (('uri = "qemu+tls://host-7/system"\n', ''), "hypervisor.libvirt.uri"),
    (('hypervisor = "libvirt"', 'hypervisor = "xen"'), "drivers.hypervisor"),
    (('hypervisor = "libvirt"', 'hypervisor = "lib virt"'), "drivers.hypervisor"),
    (('[hypervisor.libvirt]', '[hypervisor.libvirt]\nuri_typo = "x"'), "hypervisor.libvirt.uri_typo"),
])
def test_a_bad_hypervisor_option_fails_with_its_name(tmp_path, edit, field):
    old, new = edit
    assert old in HYPERVISOR

    with pytest.raises(InvalidInput) as caught:
        _load(tmp_path, HYPERVISOR.replace(old, new, 1))

    assert caught.value.field == field


def test_a_hypervisor_table_is_checked_even_when_no_hypervisor_is_chosen(tmp_path):
    with pytest.raises(InvalidInput) as caught:
        _load(tmp_path, BASE + '[hypervisor.libvirt]\nuri = "qemu:///system"\nreserved_cpus = "x"\n')

    assert caught.value.field == "hypervisor.libvirt.reserved_cpus"
