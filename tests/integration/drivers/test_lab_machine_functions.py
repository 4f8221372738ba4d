"""The lab function driver in machine mode: every function really hot-plugged into a booted lab host.

One guest is shared by the module (TCG is slow, the machines have two
cores), and the tests run in file order, each leaving the machine as the
next one expects. The rig: a host and a DPU namespace; a private libvirtd in
the host namespace with the lab host's domain (``lab.host_machine``); a
qemu-storage-daemon in the DPU namespace exporting a qcow2 overlay of the
lab host image and a blank data disk as vhost-user-blk at
``<vhost_dir>/<function id>.sock``, as the qsd storage driver would; in the
DPU namespace a Linux bridge with an address, where each net function's
representor is plugged, and busybox udhcpd on it with a fixed lease for the
function's MAC (no router, no metadata service: the guest's init gives up on
the metadata and goes on). What the guest does is read from its console's
step lines and asked through its agent on ttyS1. Times measured are printed
at the end (run with ``-s``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dpustack.drivers.functions import Function, FunctionSpec, host_bdf
from dpustack.drivers.functions.lab import LabFunctionDriver
from dpustack.drivers.storage import vhost_socket
from dpustack.errors import DriverError
from dpustack.lab import guest_agent, libvirt_daemon
from dpustack.lab.host_image import HostImage
from dpustack.lab.host_init import step_lines
from dpustack.lab.host_machine import QEMU, define_host
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.libvirt_host import HostMachine
from dpustack.linux import netns
from netns import namespaces
from storage_daemons import QSD, Daemon

BUSYBOX = "/usr/bin/busybox"
BOOT_TIMEOUT = 120.0
SEEN_TIMEOUT = 30.0
BOOT_ID, DATA_ID, NET_ID = "storage-boot", "storage-data", "net-port1"
BOOT_SLOT, NET_SLOT, DATA_SLOT = 0, 3, 5
NET_MAC = "52:54:00:fa:00:03"
BRIDGE, BRIDGE_MAC, BRIDGE_ADDRESS, GUEST_ADDRESS = "br-fn", "02:00:00:88:00:01", "10.88.0.1", "10.88.0.13"
VIRTIO_VENDOR = "0x1af4"
TIMINGS: dict[str, float] = {}


@dataclass
class Rig:
    workdir: Path
    host: str
    dpu: str
    vhost_dir: Path
    daemon: LibvirtDaemon
    machine: HostMachine
    console: Path
    agent: Path
    driver: LabFunctionDriver
    options: dict
    functions: dict[str, Function] = field(default_factory=dict)


def console_steps(rig: Rig) -> list[dict]:
    text = rig.console.read_text(errors="replace") if rig.console.exists() else ""
    return step_lines(text[:text.rfind("\n") + 1])


def wait_for_step(rig: Rig, matches: Callable[[dict], bool], timeout: float = SEEN_TIMEOUT, *,
                  after: int = 0) -> dict:
    """The first step line from the ``after``-th on that ``matches``."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((step for step in console_steps(rig)[after:] if matches(step)), None)
        if found is not None:
            return found
        assert time.monotonic() < deadline, (f"no such step line within {timeout:g} s; steps: "
                                             f"{console_steps(rig)}")
        time.sleep(0.05)


def in_guest(rig: Rig, command: str, timeout: float = 20.0) -> tuple[int, str]:
    status, output = guest_agent.run(rig.agent, command, timeout)
    return status, output.decode(errors="replace")


def guest_waits_for(rig: Rig, condition: str, timeout: int = 20) -> None:
    """Poll a shell condition inside the guest (10 times a second) until it holds."""
    status, output = in_guest(rig, f"i=0; until {condition}; do i=$((i + 1)); [ $i -ge {timeout * 10} ] && "
                                   f"exit 1; sleep 0.1; done", timeout + 5)
    assert status == 0, f"the guest never saw `{condition}`: {output}"


def names(namespace: str) -> set[str]:
    return {link.name for link in netns.links(namespace)}


def indexes(rig: Rig) -> dict[str, int]:
    found = {f"host/{link.name}": link.index for link in netns.links(rig.host)}
    found.update({f"dpu/{link.name}": link.index for link in netns.links(rig.dpu)})
    return found


def plug_into_bridge(rig: Rig, representor: str) -> None:
    with netns.rtnl(rig.dpu) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=representor)[0],
                 master=ipr.link_lookup(ifname=BRIDGE)[0])


def restarted(rig: Rig) -> LabFunctionDriver:
    return LabFunctionDriver(rig.host, rig.dpu, **rig.options)


def udhcpd(namespace: str, workdir: Path) -> subprocess.Popen[bytes]:
    """busybox udhcpd on the DPU's bridge, in the foreground: the net function's MAC gets GUEST_ADDRESS."""
    config, pidfile, log_path = workdir / "udhcpd.conf", workdir / "udhcpd.pid", workdir / "udhcpd.log"
    config.write_text(f"interface {BRIDGE}\nstart 10.88.0.100\nend 10.88.0.150\n"
                      f"lease_file {workdir}/udhcpd.leases\npidfile {pidfile}\n"
                      f"static_lease {NET_MAC} {GUEST_ADDRESS}\noption subnet 255.255.255.0\noption lease 3600\n")
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(["ip", "netns", "exec", namespace, BUSYBOX, "udhcpd", "-f", str(config)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 5
    while not pidfile.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            kill(daemon)
            raise AssertionError(f"udhcpd did not start: {log_path.read_text()}")
        time.sleep(0.01)
    return daemon


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(5)


@pytest.fixture(scope="module")
def rig(host_image: HostImage, libvirt_cache: Path) -> Iterator[Rig]:
    for tool in (libvirt_daemon.LIBVIRTD, QSD, QEMU, BUSYBOX, "/usr/bin/qemu-img"):
        assert Path(tool).exists(), (f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu "
                                     "qemu-system-x86 qemu-utils busybox-static")
    workdir = Path(tempfile.mkdtemp(prefix="lfm-", dir="/tmp"))  # short: unix socket paths
    try:
        with namespaces("host", "dpu") as made:
            yield from _rig(workdir, host_image, libvirt_cache, made["host"], made["dpu"])
    finally:
        print("\nLAB-MACHINE-FUNCTION-TIMINGS " + json.dumps({k: round(v, 3) for k, v in TIMINGS.items()}, indent=1))
        shutil.rmtree(workdir, ignore_errors=True)
    assert not any(netns.exists(name) for name in made.values())


def _rig(workdir: Path, host_image: HostImage, cache: Path, host: str, dpu: str) -> Iterator[Rig]:
    vhost_dir = workdir / "vhost"
    vhost_dir.mkdir()
    overlay, data = workdir / "boot.qcow2", workdir / "data.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(host_image.path), "-F", "raw",
                    str(overlay)], check=True)
    with data.open("wb") as handle:
        handle.truncate(16 << 20)
    storage = Daemon(dpu, workdir, "qsd", [
        "--blockdev", f"driver=file,node-name=file0,filename={overlay}",
        "--blockdev", "driver=qcow2,node-name=boot,file=file0",
        "--export", f"type=vhost-user-blk,id=boot,node-name=boot,writable=on,addr.type=unix,"
                    f"addr.path={vhost_socket(vhost_dir, BOOT_ID)}",
        "--blockdev", f"driver=file,node-name=data,filename={data}",
        "--export", f"type=vhost-user-blk,id=data,node-name=data,writable=on,addr.type=unix,"
                    f"addr.path={vhost_socket(vhost_dir, DATA_ID)}"])
    daemon = LibvirtDaemon(workdir / "lv", host, cache=cache)
    dhcp: subprocess.Popen[bytes] | None = None
    try:
        storage.start()
        with netns.rtnl(dpu) as ipr:
            # a MAC of its own: a bridge otherwise takes its ports' lowest, and changes it with them
            ipr.link("add", ifname=BRIDGE, kind="bridge", address=BRIDGE_MAC)
            index = ipr.link_lookup(ifname=BRIDGE)[0]
            ipr.addr("add", index=index, address=BRIDGE_ADDRESS, prefixlen=24)
            ipr.link("set", index=index, state="up")
        dhcp = udhcpd(dpu, workdir)
        daemon.start()
        machine = define_host(daemon.uri, f"lfm-{host.split('-')[1]}", console_log=workdir / "console.log",
                              command_socket=workdir / "ttyS1.sock")
        options = {"state_dir": workdir / "state", "machine_uri": daemon.uri, "machine": machine.name,
                   "vhost_dir": vhost_dir}
        driver = LabFunctionDriver(host, dpu, **options)
        driver.validate()
        yield Rig(workdir=workdir, host=host, dpu=dpu, vhost_dir=vhost_dir, daemon=daemon, machine=machine,
                  console=workdir / "console.log", agent=workdir / "ttyS1.sock", driver=driver, options=options)
    finally:
        daemon.stop()
        if dhcp is not None:
            kill(dhcp)
        storage.kill()


@pytest.fixture(scope="module")
def booted(rig: Rig) -> dict:
    """The boot disk's storage function made while the machine is off, then the machine started."""
    seen: dict = {"state": rig.machine.state()}
    rig.functions[BOOT_ID] = rig.driver.create(FunctionSpec(BOOT_ID, slot=BOOT_SLOT, kind="storage"))
    seen["devices"] = rig.machine.devices()
    seen["listed"] = rig.driver.list()
    started = time.monotonic()
    rig.machine.start()
    seen["boot"] = wait_for_step(rig, lambda step: step["step"] == "boot", BOOT_TIMEOUT)
    TIMINGS["start -> boot step line"] = time.monotonic() - started
    return seen


# ----------------------------------------------------------------------------- plugging
def test_a_storage_function_made_while_the_machine_is_off_is_what_it_boots_from(rig: Rig, booted: dict):
    boot = rig.functions[BOOT_ID]
    assert booted["state"] == "off"
    [device] = booted["devices"]  # the definition's
    assert (device.alias, device.kind, device.slot, device.bdf, device.socket, device.boot_order) == \
        ("slot0", "disk", BOOT_SLOT, boot.bdf, str(vhost_socket(rig.vhost_dir, BOOT_ID)), 1)
    assert booted["listed"] == [boot]
    assert booted["boot"]["bdf"] == boot.bdf == host_bdf(BOOT_SLOT) == "0000:41:00.0"
    assert booted["boot"]["disk"] == "/dev/vda" and booted["boot"]["label"] == "DPUSTACK"
    assert rig.machine.state() == "on" and rig.driver.list() == [boot]


def test_a_net_function_on_the_running_machine_is_a_nic_at_its_bdf_wired_to_its_representor(rig: Rig,
                                                                                          booted: dict):
    after = len(console_steps(rig))
    started = time.monotonic()
    function = rig.driver.create(FunctionSpec(NET_ID, slot=NET_SLOT, mac=NET_MAC))
    TIMINGS["net create (call)"] = time.monotonic() - started
    plug_into_bridge(rig, function.representor)
    rig.functions[NET_ID] = function
    dhcp = wait_for_step(rig, lambda step: step["step"] == "dhcp" and step.get("mac") == NET_MAC, after=after)
    TIMINGS["net create -> guest dhcp line"] = time.monotonic() - started

    assert (function.bdf, function.representor, function.mac) == ("0000:44:00.0", "pf3hpf", NET_MAC)
    assert dhcp["address"] == f"{GUEST_ADDRESS}/24"
    assert in_guest(rig, f"cat /sys/bus/pci/devices/{function.bdf}/vendor") == (0, VIRTIO_VENDOR + "\n")
    assert in_guest(rig, f"ls /sys/bus/pci/devices/{function.bdf}/virtio*/net") == (0, dhcp["nic"] + "\n")
    ping = in_guest(rig, f"ping -c 3 -W 2 {BRIDGE_ADDRESS}")
    assert ping[0] == 0, ping[1]  # guest NIC -> tap3 -> mirred -> ens3f0 -> pf3hpf -> the DPU's bridge
    assert {"tap3", "ens3f0"} <= names(rig.host) and "pf3hpf" in names(rig.dpu)
    addresses = netns.run(rig.host, ["ip", "-j", "addr", "show"]).stdout
    assert [link["addr_info"] for link in json.loads(addresses) if link["ifname"] in ("tap3", "ens3f0")] == [[], []]
    device = next(device for device in rig.machine.devices() if device.slot == NET_SLOT)
    assert (device.alias, device.kind, device.mac, device.tap) == ("slot3", "net", NET_MAC, "tap3")
    assert rig.driver.get(NET_ID) == function
    assert rig.driver.list() == [rig.functions[BOOT_ID], function]


def test_a_second_storage_function_is_a_disk_hot_plugged_into_the_guest(rig: Rig, booted: dict):
    started = time.monotonic()
    function = rig.driver.create(FunctionSpec(DATA_ID, slot=DATA_SLOT, kind="storage"))
    rig.functions[DATA_ID] = function
    guest_waits_for(rig, f"[ -e /sys/bus/pci/devices/{function.bdf}/virtio*/block/vdb ]")
    TIMINGS["storage create -> /dev/vdb in guest"] = time.monotonic() - started

    assert function.bdf == "0000:46:00.0"
    assert in_guest(rig, "dd if=/dev/vdb bs=4096 count=1 2>/dev/null | wc -c") == (0, "4096\n")
    device = next(device for device in rig.machine.devices() if device.slot == DATA_SLOT)
    assert (device.alias, device.socket, device.boot_order) == \
        ("slot5", str(vhost_socket(rig.vhost_dir, DATA_ID)), DATA_SLOT + 1)
    assert [f.id for f in rig.driver.list()] == [BOOT_ID, NET_ID, DATA_ID]


# ---------------------------------------------------------------------------- refusals
def test_a_storage_function_whose_volume_is_not_attached_is_refused_and_the_machine_is_unchanged(
        rig: Rig, booted: dict):
    devices = rig.machine.devices()

    with pytest.raises(DriverError, match="'storage-unattached'.*not attached yet: no vhost-user-blk socket"):
        rig.driver.create(FunctionSpec("storage-unattached", slot=7, kind="storage"))

    assert rig.machine.devices() == devices
    assert rig.driver.get("storage-unattached") is None
    assert [f.id for f in rig.driver.list()] == [BOOT_ID, NET_ID, DATA_ID]


def test_a_slot_beyond_the_machines_root_ports_is_refused_before_anything_is_made(rig: Rig, booted: dict):
    before = names(rig.host), names(rig.dpu)

    with pytest.raises(DriverError, match="slot 16 is beyond machine .* which has slots 0 to 15"):
        rig.driver.create(FunctionSpec("net-far", slot=16))

    assert (names(rig.host), names(rig.dpu)) == before


def test_a_slot_holding_a_device_that_is_not_the_functions_is_an_error(rig: Rig, booted: dict):
    with netns.rtnl(rig.host) as ipr:
        for tap in ("tapx", "tapy"):  # one tap serves one NIC
            ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
    try:
        rig.machine.plug_net(8, "tapy", "52:54:00:fa:00:08", "someone")
        rig.machine.plug_net(9, "tapx", "52:54:00:fa:00:09", "slot9")  # ours by its name, not by what it is
        before = names(rig.host), names(rig.dpu)
        with pytest.raises(DriverError, match="slot 8 of machine .* holds device 'someone'"):
            rig.driver.create(FunctionSpec("net-8", slot=8))
        with pytest.raises(DriverError, match="slot 9 .* not what function 'net-9' is: kind, MAC and tap "
                                              "net, 52:54:00:fa:00:09, tapx"):
            rig.driver.create(FunctionSpec("net-9", slot=9, mac="52:54:00:fa:00:99"))
        assert (names(rig.host), names(rig.dpu)) == before
    finally:
        for alias in ("someone", "slot9"):
            rig.machine.unplug(alias, missing_ok=True)
        with netns.rtnl(rig.host) as ipr:
            for index in ipr.link_lookup(ifname="tapx") + ipr.link_lookup(ifname="tapy"):
                ipr.link("del", index=index)
    assert [f.id for f in rig.driver.list()] == [BOOT_ID, NET_ID, DATA_ID]


def test_an_unreachable_machine_is_a_driver_error_with_libvirts_reason(rig: Rig, booted: dict):
    before = names(rig.host), names(rig.dpu)
    lost = LabFunctionDriver(rig.host, rig.dpu, **{**rig.options, "machine_uri":
                             f"qemu+unix:///system?socket={rig.workdir}/no-such.sock"})
    with pytest.raises(DriverError, match="functions.validate: cannot connect to libvirt at .*no-such.sock: "):
        lost.validate()
    with pytest.raises(DriverError, match="functions.create 'net-7': cannot connect to libvirt"):
        lost.create(FunctionSpec("net-7", slot=7))
    with pytest.raises(DriverError, match="functions.list: cannot connect to libvirt"):
        lost.list()
    assert (names(rig.host), names(rig.dpu)) == before
    with pytest.raises(DriverError, match="no domain 'no-such-host'"):
        LabFunctionDriver(rig.host, rig.dpu, **{**rig.options, "machine": "no-such-host"}).validate()


# ------------------------------------------------------------------- restart and losses
def test_a_restarted_agent_finds_the_same_functions_and_creating_them_again_changes_nothing(
        rig: Rig, booted: dict):
    before, devices = indexes(rig), rig.machine.devices()
    driver = restarted(rig)

    assert driver.list() == sorted(rig.functions.values(), key=lambda f: f.slot)
    assert [f.bdf for f in driver.list()] == ["0000:41:00.0", "0000:44:00.0", "0000:46:00.0"]
    started = time.monotonic()
    for function in rig.functions.values():
        spec = FunctionSpec(function.id, slot=function.slot, type=function.type, kind=function.kind,
                            mac=function.mac if function.kind == "net" else None)
        assert driver.create(spec) == function
    TIMINGS["create of 3 functions present (no-op)"] = time.monotonic() - started
    assert indexes(rig) == before and rig.machine.devices() == devices
    with pytest.raises(DriverError, match="already exists"):
        driver.create(FunctionSpec(NET_ID, slot=NET_SLOT, mac=NET_MAC), may_exist=False)


def test_a_veth_pair_lost_with_the_soc_is_made_again_and_the_guests_nic_stays(rig: Rig, booted: dict):
    function = rig.functions[NET_ID]
    netns.run(rig.dpu, ["ip", "link", "del", function.representor])  # its host end goes with it
    assert rig.driver.get(NET_ID) is None and NET_ID not in [f.id for f in rig.driver.list()]

    after = len(console_steps(rig))
    assert restarted(rig).create(FunctionSpec(NET_ID, slot=NET_SLOT, mac=NET_MAC)) == function
    plug_into_bridge(rig, function.representor)
    assert in_guest(rig, f"ping -c 1 -W 2 {BRIDGE_ADDRESS}")[0] == 0  # the tap is wired to the new host end
    assert [step["step"] for step in console_steps(rig)[after:]] == []  # no nic-gone: the NIC stayed plugged
    assert rig.driver.get(NET_ID) == function


def test_a_nic_the_machine_lost_is_not_listed_and_create_plugs_it_again_at_its_bdf(rig: Rig, booted: dict):
    function = rig.functions[NET_ID]
    after = len(console_steps(rig))
    rig.machine.unplug("slot3")  # behind the driver's back
    wait_for_step(rig, lambda step: step["step"] == "nic-gone", after=after)

    assert NET_ID not in [f.id for f in rig.driver.list()] and rig.driver.get(NET_ID) is None
    after = len(console_steps(rig))
    started = time.monotonic()
    assert rig.driver.create(FunctionSpec(NET_ID, slot=NET_SLOT, mac=NET_MAC)) == function
    dhcp = wait_for_step(rig, lambda step: step["step"] == "dhcp" and step.get("mac") == NET_MAC, after=after)
    TIMINGS["re-plug of a lost NIC -> guest dhcp line"] = time.monotonic() - started
    assert in_guest(rig, f"ls /sys/bus/pci/devices/{function.bdf}/virtio*/net") == (0, dhcp["nic"] + "\n")
    assert in_guest(rig, f"ping -c 1 -W 2 {BRIDGE_ADDRESS}")[0] == 0
    assert rig.driver.get(NET_ID) == function


def test_a_tap_lost_in_the_host_namespace_is_made_again_and_the_nic_plugged_again(rig: Rig, booted: dict):
    function = rig.functions[NET_ID]
    with netns.rtnl(rig.host) as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname="tap3")[0])
    assert rig.driver.get(NET_ID) is None  # its device is there, but on a tap that is gone

    after = len(console_steps(rig))
    assert rig.driver.create(FunctionSpec(NET_ID, slot=NET_SLOT, mac=NET_MAC)) == function
    wait_for_step(rig, lambda step: step["step"] == "dhcp" and step.get("mac") == NET_MAC, after=after)
    assert in_guest(rig, f"ping -c 1 -W 2 {BRIDGE_ADDRESS}")[0] == 0
    assert rig.driver.get(NET_ID) == function


def test_a_disk_the_machine_lost_is_plugged_again_at_its_bdf(rig: Rig, booted: dict):
    function = rig.functions[DATA_ID]
    rig.machine.unplug("slot5")
    guest_waits_for(rig, f"[ ! -e /sys/bus/pci/devices/{function.bdf} ]")
    assert rig.driver.get(DATA_ID) is None

    assert rig.driver.create(FunctionSpec(DATA_ID, slot=DATA_SLOT, kind="storage")) == function
    guest_waits_for(rig, f"[ -e /sys/bus/pci/devices/{function.bdf}/virtio*/block ]")
    assert in_guest(rig, f"cat /sys/bus/pci/devices/{function.bdf}/vendor") == (0, VIRTIO_VENDOR + "\n")
    assert rig.driver.get(DATA_ID) == function


# ------------------------------------------------------------------------------ delete
def test_deleting_the_net_function_unplugs_the_nic_and_leaves_nothing_in_the_namespaces(rig: Rig, booted: dict):
    function = rig.functions.pop(NET_ID)
    after = len(console_steps(rig))
    started = time.monotonic()
    rig.driver.delete(NET_ID)
    TIMINGS["net delete (call, returns once the guest let go)"] = time.monotonic() - started
    wait_for_step(rig, lambda step: step["step"] == "nic-gone", after=after)
    TIMINGS["net delete -> guest nic-gone line"] = time.monotonic() - started

    status, _ = in_guest(rig, f"[ -e /sys/bus/pci/devices/{function.bdf} ]")
    assert status == 1
    assert names(rig.host) == {"lo"}
    assert names(rig.dpu) == {"lo", BRIDGE}
    assert NET_SLOT not in [device.slot for device in rig.machine.devices()]
    rig.driver.delete(NET_ID)  # gone already: fine
    with pytest.raises(DriverError, match="does not exist"):
        rig.driver.delete(NET_ID, if_exists=False)


def test_deleting_the_data_disks_function_unplugs_the_disk(rig: Rig, booted: dict):
    function = rig.functions.pop(DATA_ID)
    started = time.monotonic()
    rig.driver.delete(DATA_ID)
    TIMINGS["storage delete (call)"] = time.monotonic() - started

    guest_waits_for(rig, f"[ ! -e /sys/bus/pci/devices/{function.bdf} ] && [ ! -e /sys/block/vdb ]")
    assert [device.alias for device in rig.machine.devices()] == ["slot0"]
    assert rig.driver.list() == [rig.functions[BOOT_ID]]


def test_with_the_machine_off_functions_go_into_and_out_of_its_definition(rig: Rig, booted: dict):
    rig.machine.destroy()
    function = rig.driver.create(FunctionSpec(NET_ID, slot=NET_SLOT, mac=NET_MAC))
    assert [(device.alias, device.mac) for device in rig.machine.devices()] == [("slot0", None), ("slot3", NET_MAC)]
    assert rig.driver.list() == [rig.functions[BOOT_ID], function]

    rig.driver.delete(NET_ID)
    rig.driver.delete(BOOT_ID)

    assert rig.machine.devices() == [] and rig.driver.list() == []
    assert names(rig.host) == {"lo"} and names(rig.dpu) == {"lo", BRIDGE}
