"""`dpustack demo --dataplane ovn`: every packet flow passes, and no namespace, process or directory is left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cli_process import processes_naming
from dpustack.lab.state import STATE_FILE
from dpustack.linux import netns

FLOWS = ["setup: flavor, image, network, group web", "create s1 (group default) on dpu-bm-1",
         "create s2 (group web) on dpu-bm-2",
         "each host boots from its volume and takes its address from OVN's DHCP",
         "metadata applied in each host: hostname, key, user-data script",
         "storage: snapshot of s1's boot volume while in use, a volume from it hot-plugged into s2",
         "ping s1 → s2 blocked: web has no ingress rule", "ICMP rule on web: ping s1 → s2 across Geneve",
         "ping s2 → s1 blocked: default admits its members only",
         "QoS: s1's port capped at 1 Mbit/s, then 100 pkt/s, measured",
         "a NIC hot-added to s2 gets its address by DHCP", "NIC removal goes silent",
         "new admin password for s1: after a reboot, root logs in with it on s1's serial console",
         "create v1 (group default), a VM on dpu-vm-1: it boots from its volume, takes its address from OVN's DHCP "
         "and applies its metadata",
         "ping v1 (VM) → s1 (bare metal) across Geneve",
         "a NIC hot-plugged into running v1 gets its address by DHCP; unplugged, it leaves v1",
         "storage: snapshot of v1's boot volume while it runs, a volume from it hot-plugged into v1",
         "resize v1 to vm.lab2 (384 MiB): it boots again with the memory, the same NICs and disks; "
         "resize-confirm frees the old flavor's claim",
         "stop v1: its OS shuts down on the power button, its functions stay on the DPU; start: it boots again",
         "pause v1: PAUSED, no ping answered; unpause: ACTIVE, answering again, not rebooted",
         "new admin password for v1 through its QEMU guest agent: root logs in with it on v1's serial console, "
         "no reboot",
         "cold migration of v1 dpu-vm-1 → dpu-vm-2: it boots there with its hostname, address and a file on its "
         "boot volume; migrate-confirm frees dpu-vm-1's claim",
         "live migration of v1 dpu-vm-2 → dpu-vm-1 while s1 pings it: its uptime continues, the file is there, the "
         "pings lost are bounded by its NIC's gap",
         "bare metal → VM: s2 migrates from dpu-bm-2 to dpu-vm-2 with flavor vm.lab: its hostname, address and file "
         "survive",
         "VM → bare metal: v1 migrates from dpu-vm-1 to dpu-bm-2 with flavor bm.lab: its hostname, address and file "
         "survive",
         "delete everything: nothing left on br-int or in the machines, no metadata namespace, no storage export",
         "lab down: no namespace, no process left"]
LAB_NAMESPACES = {"dpu-bm-1", "dpu-bm-2", "dpu-vm-1", "dpu-vm-2", "host-bm-1", "host-bm-2", "host-vm-1", "host-vm-2",
                  "dpustack-lab-ul", "dpustack-lab-st"}

_NEEDED = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "ethtool", "ipmitool",
           "qemu-storage-daemon", "qemu-io", "qemu-system-x86_64", "libvirtd", "syslinux", "mcopy", "mkfs.fat")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the OVN demo needs root (namespaces)"),
    pytest.mark.skipif(any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
                           for p in _NEEDED), reason=f"needs {', '.join(_NEEDED)}"),
]


@pytest.mark.timeout(900)
def test_ovn_demo_passes_every_flow_and_leaves_nothing() -> None:
    assert not LAB_NAMESPACES & set(netns.names()), "an OVN lab is already running here"
    tmp = Path(tempfile.mkdtemp(prefix="dps-e2e-", dir="/tmp"))  # short: OVN's unix socket paths
    dpustack = str(Path(sys.executable).with_name("dpustack"))
    try:
        result = subprocess.run([dpustack, "demo", "--dataplane", "ovn"], capture_output=True, text=True, timeout=720,
                                env={**os.environ, "TMPDIR": str(tmp), "COLUMNS": "200"})
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 4}
        assert list(rows) == FLOWS, result.stdout
        for flow in FLOWS:
            assert "passed" in rows[flow], rows[flow]
        assert f"All {len(FLOWS)} flows passed" in result.stdout
        assert not processes_naming(tmp)
        assert list(tmp.iterdir()) == []  # the demo's lab directory is gone
        assert not LAB_NAMESPACES & set(netns.names())
    finally:
        for lab_dir in tmp.glob("dps-demo-*"):
            if (lab_dir / STATE_FILE).exists():  # the demo was cut short (a timeout): its lab is still up
                subprocess.run([dpustack, "lab", "down", "--dir", str(lab_dir)], capture_output=True, timeout=300)
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_unknown_data_plane_is_refused() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("dpustack")), "demo", "--dataplane", "dpdk"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unknown data plane 'dpdk'" in result.stderr and "Traceback" not in result.stderr
