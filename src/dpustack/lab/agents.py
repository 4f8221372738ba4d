"""The agent.toml of each emulated node: a generated PCI tree, and either memory drivers and a memory BMC
(the default lab) or, with the OVN data plane, the ``lab`` functions between the node's host and DPU
namespaces, the ``ovs`` switch on the DPU's ovsdb-server, and for a bare-metal node an emulated Redfish or
IPMI BMC driving its host machine, for a VM node the ``libvirt-lab`` hypervisor on its host namespace's
libvirtd (the functions then in tap mode, a memory BMC)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from dpustack.lab import pcitrees
from dpustack.lab.bmcs import EmulatedBmc
from dpustack.lab.dataplane import metadata_prefix
from dpustack.lab.pki import Issued
from dpustack.secrets import encrypt

NODE_CPU = 64
NODE_MEM_MIB = 262144
REPORT_INTERVAL = 2

# The site-wide device filters every lab node gets ([[pci.information]]: match, extra).
PCI_INFORMATION = (
    ('{vendor_id = "15b3", product_id = "101e"}', '{physical_network = "physnet1", remote_managed = true}'),
    ('{vendor_id = "8086", product_id = "154c"}', '{physical_network = "physnet2"}'),
    ('{vendor_id = "8086", product_id = "000[1-2]"}', '{"e.group" = "gpu"}'),
    ('{vendor_id = "177d", product_id = "0xa"}', '{"e.QAclass" = "1"}'),
    ('{vendor_id = "177d", product_id = "0xb"}', '{"e.QAclass" = "2"}'),
    ('{vendor_id = "19e5", product_id = "0xb"}', '{"e.QAclass" = "3"}'),
)


@dataclass
class AgentSpec:
    """Where one lab agent lives and how it reaches the controller."""

    hostname: str
    port: int
    node_dir: Path
    controller_url: str
    controller_token: str  # the agent token issued for this node at enrolment
    controller_digest: str  # the SHA-256 of the credential the controller presents to this node
    ca_file: Path  # the lab CA: the controller's certificate must verify against it
    cert: Issued  # this agent's server certificate (naming its hostname) and key
    index: int = 1  # the node's number in the lab: its PCI tree and DPU serial

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.node_dir / "agent.toml"

    @property
    def pci_dir(self) -> Path:
        return self.node_dir / "pci"


@dataclass
class HostMachineSpec:
    """A bare-metal node's host machine."""

    uri: str  # its libvirtd
    domain: str
    cpu: int  # its vCPUs and memory (MiB), for a BMC that cannot report them
    mem: int


@dataclass
class VmHost:
    """A VM node's host: the libvirtd its VMs run under, and where their command channels are."""

    uri: str
    command_dir: Path


@dataclass
class NodeDataplane:
    """Where a node's functions and switch live when the lab runs the OVN data plane."""

    host_netns: str
    dpu_netns: str
    ovsdb: str  # the DPU's OVSDB connection, unix:<dir>/db.sock
    qsd: Path  # the QMP socket of the DPU's qemu-storage-daemon
    vhost_dir: Path  # where that daemon puts the storage functions' vhost-user-blk sockets
    machine: HostMachineSpec | None = None  # a bare-metal node's; a VM node has none (its functions have taps)


def bluefield_serial(index: int) -> str:
    """The card serial number of node ``index``'s BlueField-2 (its VPD ``SN``)."""
    return f"MT2146X{index:05d}"


def node_cards(index: int) -> list[pcitrees.Card]:
    """Every node's DPU is a BlueField-2; node 1, 4, … adds an Intel NIC, 2, 5, … two GPUs,
    3, 6, … the three encryption cards."""
    cards = [pcitrees.bluefield2(bluefield_serial(index), mac_base=0x0C42A1000000 | (index & 0xFF) << 16)]
    extra = index % 3
    if extra == 1:
        cards.append(pcitrees.intel_x710(mac_base=0x3CFDFE000000 | (index & 0xFF) << 16))
    elif extra == 2:
        cards += [pcitrees.gpu("0000:af:00.0", "0001"), pcitrees.gpu("0000:b0:00.0", "0002")]
    else:
        cards += pcitrees.encryption_cards()
    return cards


def _q(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML escapes)."""
    return json.dumps(value)


def render_config(spec: AgentSpec, serial: str, *, dataplane: NodeDataplane | None = None,
                  bmc: EmulatedBmc | None = None, hypervisor: VmHost | None = None) -> str:
    """The TOML text (TLS both ways, this node's own credentials); the BMC password (random for the memory BMC, the emulator's otherwise) is stored
    encrypted with the node's own key."""
    state = spec.node_dir / "state"
    key_file = spec.node_dir / "secret.key"
    password = encrypt(bmc.password if bmc else secrets.token_urlsafe(16), key_file=key_file)
    address = bmc.address if bmc else f"bmc.{spec.hostname}.lab"
    return "\n".join([
        f"hostname = {_q(spec.hostname)}",
        f"node_type = {_q('vm' if hypervisor else 'bm')}",
        'dpu_model = "BF2"',
        f"bind = {_q(f'127.0.0.1:{spec.port}')}",
        f"advertise_url = {_q(spec.url)}",
        f"state_dir = {_q(str(state))}",
        f"report_interval = {REPORT_INTERVAL}",
        'bridge = "br-int"',
        "",
        "[controller]",
        f"url = {_q(spec.controller_url)}",
        f"token = {_q(spec.controller_token)}",
        f"ca_file = {_q(str(spec.ca_file))}",
        "",
        "[api]",
        f"controller_credential_sha256 = {_q(spec.controller_digest)}",
        "",
        "[tls]",
        f"cert_file = {_q(str(spec.cert.cert_file))}",
        f"key_file = {_q(str(spec.cert.key_file))}",
        "",
        "[drivers]",
        f"functions = {_q('lab' if dataplane else 'memory')}",
        f"switch = {_q('ovs' if dataplane else 'memory')}",
        f"storage = {_q('qsd' if dataplane else 'memory')}",
        f"bmc = {_q(bmc.kind if bmc else 'memory')}",
        'inventory = "sysfs"',
        *(['hypervisor = "libvirt-lab"'] if hypervisor else []),
        "",
        *_dataplane_lines(dataplane),
        *_hypervisor_lines(hypervisor, dataplane),
        "[bmc]",
        f"address = {_q(address)}",
        f"username = {_q(bmc.username if bmc else 'admin')}",
        f"password_encrypted = {_q(password)}",
        f"secret_key_file = {_q(str(key_file))}",
        "",
        "[bmc.memory]",
        f"cpu = {NODE_CPU}",
        f"mem = {NODE_MEM_MIB}",
        f"serial_number = {_q(serial)}",
        f"model = {_q('dpustack lab VM host' if hypervisor else 'dpustack lab BM host')}",
        f"state_file = {_q(str(state / 'bmc.json'))}",
        "",
        *_emulated_bmc_lines(bmc, dataplane),
        *_pci_lines(spec),
    ])


def _dataplane_lines(dataplane: NodeDataplane | None) -> list[str]:
    if dataplane is None:
        return []
    if dataplane.machine is not None:
        functions = [f"machine_uri = {_q(dataplane.machine.uri)}", f"machine = {_q(dataplane.machine.domain)}",
                     f"vhost_dir = {_q(str(dataplane.vhost_dir))}"]
    else:
        functions = ["taps = true"]
    return ["[functions.lab]", f"host_netns = {_q(dataplane.host_netns)}", f"dpu_netns = {_q(dataplane.dpu_netns)}",
            *functions, "", "[switch.ovs]", f"connection = {_q(dataplane.ovsdb)}", 'datapath_type = "netdev"', "",
            "[storage.qsd]", f"qmp_socket = {_q(str(dataplane.qsd))}",
            f"socket_dir = {_q(str(dataplane.vhost_dir))}", "",
            "[metadata]", "enabled = true", f"dpu_netns = {_q(dataplane.dpu_netns)}",
            f"namespace_prefix = {_q(metadata_prefix(dataplane.dpu_netns))}", ""]


def _hypervisor_lines(hypervisor: VmHost | None, dataplane: NodeDataplane | None) -> list[str]:
    if hypervisor is None or dataplane is None:
        return []
    return ["[hypervisor.libvirt-lab]", f"uri = {_q(hypervisor.uri)}", f"vhost_dir = {_q(str(dataplane.vhost_dir))}",
            f"command_dir = {_q(str(hypervisor.command_dir))}", ""]


def _emulated_bmc_lines(bmc: EmulatedBmc | None, dataplane: NodeDataplane | None) -> list[str]:
    """[bmc.redfish] or [bmc.ipmi], and [bmc.host] with the machine's figures for what the BMC cannot tell:
    IPMI reports no CPU count nor memory size, and Redfish memory in whole GiB (a 256 MiB machine: 0)."""
    if bmc is None or dataplane is None or dataplane.machine is None:
        return []
    host = ["[bmc.host]", f"cpu = {dataplane.machine.cpu}", f"mem = {dataplane.machine.mem}", ""]
    if bmc.kind == "redfish":
        console = [f"console_libvirt_uri = {_q(bmc.libvirt_uri)}"] if bmc.libvirt_uri else []
        return ["[bmc.redfish]", "timeout = 30", "request_timeout = 10", *console, "", *host]
    return ["[bmc.ipmi]", f"port = {bmc.port}", "timeout = 30", "", *host]


def _pci_lines(spec: AgentSpec) -> list[str]:
    """The [pci] section: the node's generated tree and the lab's device filters."""
    lines = ["[pci]", f"root = {_q(str(spec.pci_dir / 'sysfs'))}",
             f"devlink_json = {_q(str(spec.pci_dir / 'devlink.json'))}",
             'flavor_attrs = ["vendor_id", "product_id", "extra_info"]', ""]
    for match, extra in PCI_INFORMATION:
        lines += ["[[pci.information]]", f"match = {match}", f"extra = {extra}", ""]
    return lines


def write_config(spec: AgentSpec, serial: str, *, dataplane: NodeDataplane | None = None,
                 bmc: EmulatedBmc | None = None, hypervisor: VmHost | None = None) -> Path:
    """Write the node's PCI tree and its agent.toml (mode 0600: it holds tokens and the BMC password)."""
    (spec.node_dir / "state").mkdir(parents=True, exist_ok=True)
    if spec.pci_dir.exists():
        shutil.rmtree(spec.pci_dir)
    pcitrees.write_node(spec.pci_dir, node_cards(spec.index))
    fd = os.open(spec.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render_config(spec, serial, dataplane=dataplane, bmc=bmc, hypervisor=hypervisor))
    return spec.config_path
