"""Lab hosts as real machines: a private libvirtd per host namespace, and the host's domain on it.

One guest is booted for the whole module (TCG is slow and the machines have
two cores) and the tests run in file order, each leaving it as the next one
expects: on, booted from its vhost-user-blk disk (qemu-storage-daemon in the
host namespace) with only that disk plugged, until the power tests near the
end. The guest boots a tiny SYSLINUX disk (tests/boot_disk.py) whose /init
prints a ``DEVICES PCI …| NET …| BLK …`` line on ttyS0 whenever what it
sees changes, and at least every second, and the same line on ttyS1, the
command channel. Times measured are printed at the end (run with ``-s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from boot_disk import make_boot_disk
from dpustack.lab import libvirt_daemon, processes
from dpustack.lab.guest_initramfs import build_initramfs, init_script
from dpustack.lab.guest_kernel import guest_kernel
from dpustack.drivers.functions import host_bdf
from dpustack.errors import DriverError
from dpustack.lab.host_machine import domain_xml
from dpustack.libvirt_host import HostMachine, connect
from dpustack.lab.kernel_modules import KernelModules
from dpustack.lab.libvirt_daemon import LibvirtDaemon
from dpustack.lab.state import LabError
from dpustack.linux import netns
from netns import namespaces
from storage_daemons import QSD, Daemon

BOOT_TIMEOUT = 90.0
SEEN_TIMEOUT = 15.0
MACHINE_PATHS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt")
TIMINGS: dict[str, float] = {}

GUEST_INIT = """
for e in /sys/class/input/event*; do
    if grep -q "Power Button" "$e/device/name" 2>/dev/null; then
        (head -c 1 "/dev/input/${e##*/}" >/dev/null; echo GUEST-POWER-BUTTON; poweroff -f) &
    fi
done
echo GUEST-INIT-UP
last=""
beat=0
while true; do
    pci=$(ls /sys/bus/pci/devices | tr '\\n' ' ')
    now="PCI $pci| NET $(ls /sys/class/net | tr '\\n' ' ')| BLK $(ls /sys/block | tr '\\n' ' ')"
    if [ "$now" != "$last" ] || [ $beat -ge 10 ]; then
        echo "DEVICES $now"
        echo "DEVICES $now" > /dev/ttyS1
        last="$now"
        beat=0
    fi
    beat=$((beat + 1))
    sleep 0.1
done
"""


@dataclass
class Lab:
    """Everything the tests share: the host namespace, its storage daemon, libvirtd and the machine."""

    workdir: Path
    netns: str
    daemon: LibvirtDaemon
    machine: HostMachine
    console: Path
    command_socket: Path
    boot_socket: Path
    data_socket: Path
    machine_paths_before: dict[str, list[str] | None]


def machine_paths() -> dict[str, list[str] | None]:
    """What the machine's own libvirt directories hold (None: there is no such directory)."""
    return {path: sorted(os.listdir(path)) if os.path.isdir(path) else None for path in MACHINE_PATHS}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = SEEN_TIMEOUT) -> float:
    """Poll until ``condition()``; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def console_text(path: Path) -> str:
    """The console log up to its last complete line."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[:text.rfind("\n") + 1]


def guest_sees(path: Path, since: int = 0) -> dict[str, set[str]] | None:
    """What the guest listed last (after ``since`` characters of the console): PCI, NET and BLK names."""
    lines = [line for line in console_text(path)[since:].splitlines() if line.startswith("DEVICES ")]
    if not lines:
        return None
    parts = dict(part.strip().split(" ", 1) if " " in part.strip() else (part.strip(), "")
                 for part in lines[-1].removeprefix("DEVICES ").split("|"))
    return {key: set(value.split()) for key, value in parts.items()}


def in_guest(path: Path, key: str, name: str, since: int = 0) -> Callable[[], bool]:
    return lambda: name in ((guest_sees(path, since) or {}).get(key) or set())


def not_in_guest(path: Path, key: str, name: str) -> Callable[[], bool]:
    return lambda: guest_sees(path) is not None and name not in guest_sees(path)[key]


def processes_of(daemon: LibvirtDaemon) -> list[int]:
    """Every live process in the daemon's mount namespace (sees its run directory as /run)."""
    ours = os.stat(daemon.dir / "run")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            theirs = os.stat(f"/proc/{entry}/root/run")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino) and state != "Z":
            found.append(int(entry))
    return found


def make_tap(namespace: str, name: str) -> None:
    with netns.rtnl(namespace) as ipr:
        ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


def host_uuid(uri: str) -> str:
    connection = connect(uri)
    try:
        return ET.fromstring(connection.getCapabilities()).findtext("host/uuid")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for tool in (libvirt_daemon.LIBVIRTD, QSD, "/usr/bin/qemu-system-x86_64"):
        assert Path(tool).exists(), (f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu "
                                     "libvirt-clients qemu-system-x86")
    workdir = Path(tempfile.mkdtemp(prefix="lvh-", dir="/tmp"))  # short: unix socket paths
    kernel = guest_kernel()
    initramfs = build_initramfs(workdir / "initrd.gz", init_script(GUEST_INIT),
                                modules=KernelModules(kernel.modules_dir),
                                load=["virtio_pci", "virtio_blk", "virtio_net", "button", "evdev"])
    boot_image = make_boot_disk(workdir / "boot.img", kernel.bzimage, initramfs.path)
    data_image = workdir / "data.img"
    with data_image.open("wb") as data:
        data.truncate(16 << 20)
    before = machine_paths()
    with namespaces("lvh") as names:
        host = names["lvh"]
        sockets = {"boot": workdir / "boot.sock", "data": workdir / "data.sock"}
        args = []
        for name, image in (("boot", boot_image), ("data", data_image)):
            args += ["--blockdev", f"driver=file,node-name={name},filename={image}",
                     "--export", f"type=vhost-user-blk,id={name},node-name={name},addr.type=unix,"
                                 f"addr.path={sockets[name]},writable=on"]
        storage = Daemon(host, workdir, "qsd", args)
        daemon = LibvirtDaemon(workdir / "lv", host, cache=workdir / "cache")
        machine = HostMachine(daemon.uri, f"lab-host-{host.split('-')[1]}")
        lab = Lab(workdir=workdir, netns=host, daemon=daemon, machine=machine, console=workdir / "console.log",
                  command_socket=workdir / "ttyS1.sock", boot_socket=sockets["boot"], data_socket=sockets["data"],
                  machine_paths_before=before)
        try:
            storage.start()
            started = time.monotonic()
            daemon.start()
            TIMINGS["daemon start, capabilities not cached"] = time.monotonic() - started
            started = time.monotonic()
            machine.define(domain_xml(machine.name, console_log=lab.console, command_socket=lab.command_socket))
            TIMINGS["define"] = time.monotonic() - started
            machine.plug_disk(0, lab.boot_socket, "boot", boot_order=1)
            started = time.monotonic()
            machine.start()
            TIMINGS["start call"] = time.monotonic() - started
            wait_for(lambda: lab.console.exists() and lab.console.stat().st_size > 0, "console output", BOOT_TIMEOUT)
            TIMINGS["start -> first console output (SYSLINUX)"] = time.monotonic() - started
            wait_for(lambda: "GUEST-INIT-UP" in console_text(lab.console), "the guest's /init", BOOT_TIMEOUT)
            TIMINGS["start -> guest /init output"] = time.monotonic() - started
            wait_for(lambda: guest_sees(lab.console) is not None, "the guest's device list")
            yield lab
        finally:
            started = time.monotonic()
            daemon.stop()
            TIMINGS["daemon stop (teardown)"] = time.monotonic() - started
            storage.kill()
            print("\nLIBVIRT-LAB-TIMINGS " + json.dumps({k: round(v, 3) for k, v in TIMINGS.items()}, indent=1))
            shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ the daemon
def test_the_daemon_answers_and_a_second_one_runs_beside_it(lab: Lab):
    connection = connect(lab.daemon.uri)
    try:
        assert "<domain type='qemu'" in connection.getCapabilities()
        assert connection.getLibVersion() >= 9_000_000
    finally:
        connection.close()
    libvirtd = int((lab.daemon.dir / "run/libvirtd.pid").read_text())
    assert lab.daemon.alive and os.getpgid(libvirtd) == lab.daemon.pid  # under its reaper, which leads the group
    with namespaces("lvh2") as names:
        second = LibvirtDaemon(lab.workdir / "lv2", names["lvh2"], cache=lab.workdir / "cache")
        try:
            started = time.monotonic()
            second.start()
            TIMINGS["second daemon start, capabilities cached"] = time.monotonic() - started
            assert second.alive and lab.daemon.alive
            assert host_uuid(second.uri) != host_uuid(lab.daemon.uri)
        finally:
            second.stop()
        assert not second.alive and not (second.dir / "run/libvirtd.pid").exists()
        assert processes_of(second) == []
    assert machine_paths() == lab.machine_paths_before  # nothing written to the machine's libvirt directories


def test_a_daemon_that_does_not_answer_in_time_is_killed(lab: Lab, monkeypatch: pytest.MonkeyPatch):
    silent = lab.workdir / "silent-libvirtd"  # starts, never opens its socket: however fast the machine is
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    monkeypatch.setattr(libvirt_daemon, "LIBVIRTD", str(silent))
    with namespaces("lvh3") as names:
        daemon = LibvirtDaemon(lab.workdir / "lv3", names["lvh3"], cache=lab.workdir / "cache")
        try:
            with pytest.raises(LabError, match="did not answer within"):
                daemon.start(timeout=1.0)
        finally:
            daemon.stop()  # a daemon a failed check left running
        assert processes_of(daemon) == [] and not (daemon.dir / "run/libvirtd.pid").exists()


def test_a_daemon_that_exits_at_start_up_says_why(lab: Lab, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(libvirt_daemon, "LIBVIRTD", "/bin/false")
    with namespaces("lvh4") as names:
        daemon = LibvirtDaemon(lab.workdir / "lv4", names["lvh4"], cache=lab.workdir / "cache")
        with pytest.raises(LabError, match="exited during start-up"):
            daemon.start()
        assert processes_of(daemon) == [] and not daemon.alive


def test_a_daemon_cannot_live_under_the_directories_it_hides(lab: Lab):
    with pytest.raises(LabError, match="cannot be under /var/lib"):
        LibvirtDaemon(Path("/var/lib/dpustack-lab"), lab.netns).start()
    with pytest.raises(LabError, match="does not exist"):
        LibvirtDaemon(lab.workdir / "lv5", "dpt-no-such-namespace").start()


# ----------------------------------------------------------------- the machine
def test_the_machine_boots_from_its_vhost_user_disk(lab: Lab):
    sees = guest_sees(lab.console)
    assert host_bdf(0) == "0000:41:00.0" and host_bdf(0) in sees["PCI"]
    assert "vda" in sees["BLK"] and sees["NET"] == {"lo"}
    assert "SYSLINUX" in console_text(lab.console)
    assert lab.machine.state() == "on"
    assert lab.machine.slots() == list(range(16))
    info = lab.machine.info()
    assert (info.vcpus, info.memory_mib) == (1, 256)
    [boot] = lab.machine.devices()
    assert (boot.alias, boot.kind, boot.slot, boot.bdf, boot.socket, boot.boot_order) == \
        ("boot", "disk", 0, "0000:41:00.0", str(lab.boot_socket), 1)
    assert set(lab.daemon.qemu_pids()) == {lab.machine.name}
    assert lab.daemon.qemu_log(lab.machine.name).exists()


def test_the_console_opens_and_ttyS1_is_the_command_channel(lab: Lab):
    connection = connect(lab.daemon.uri)
    try:
        stream = connection.newStream(0)
        connection.lookupByName(lab.machine.name).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        received = bytearray()

        def read() -> None:  # a blocking stream needs no event loop; abort() below ends a recv that hangs
            while b"DEVICES PCI" not in received:
                received.extend(stream.recv(4096))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(SEEN_TIMEOUT)
        stream.abort()
        assert b"DEVICES PCI" in received, f"the interactive console gave {bytes(received[-500:])!r}"
    finally:
        connection.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.settimeout(SEEN_TIMEOUT)
        channel.connect(str(lab.command_socket))
        heard = b""
        while b"DEVICES PCI" not in heard:
            chunk = channel.recv(4096)
            assert chunk, "the command channel closed"
            heard += chunk


def test_a_nic_hot_plugged_into_slot_2_appears_at_0000_43_00_0(lab: Lab):
    tap = f"tap{lab.netns.split('-')[1]}"
    make_tap(lab.netns, tap)
    started = time.monotonic()
    nic = lab.machine.plug_net(2, tap, "52:54:00:12:34:02", "nic-2")
    TIMINGS["plug NIC (call)"] = time.monotonic() - started
    assert (nic.kind, nic.slot, nic.bdf, nic.mac, nic.tap) == ("net", 2, "0000:43:00.0", "52:54:00:12:34:02", tap)
    wait_for(in_guest(lab.console, "PCI", "0000:43:00.0"), "the NIC at 0000:43:00.0 in the guest")
    TIMINGS["plug NIC -> seen in guest (PCI)"] = time.monotonic() - started
    wait_for(in_guest(lab.console, "NET", "eth0"), "eth0 in the guest")
    TIMINGS["plug NIC -> eth0 in guest"] = time.monotonic() - started
    assert [device.alias for device in lab.machine.devices()] == ["boot", "nic-2"]


def test_a_second_disk_hot_plugs_into_slot_3(lab: Lab):
    started = time.monotonic()
    disk = lab.machine.plug_disk(3, lab.data_socket, "data")
    TIMINGS["plug disk (call)"] = time.monotonic() - started
    assert (disk.kind, disk.slot, disk.bdf, disk.socket, disk.boot_order) == \
        ("disk", 3, "0000:44:00.0", str(lab.data_socket), None)
    wait_for(in_guest(lab.console, "BLK", "vdb"), "the second disk (vdb) in the guest")
    TIMINGS["plug disk -> vdb in guest"] = time.monotonic() - started
    assert "0000:44:00.0" in guest_sees(lab.console)["PCI"]


def test_plugging_refuses_taken_slots_unknown_slots_and_known_aliases(lab: Lab):
    with pytest.raises(DriverError, match="holds 'boot' already"):
        lab.machine.plug_disk(0, lab.data_socket, "other")
    with pytest.raises(DriverError, match="no slot 16"):
        lab.machine.plug_disk(16, lab.data_socket, "other")
    with pytest.raises(DriverError, match="has a device 'data' already"):
        lab.machine.plug_disk(5, lab.data_socket, "data")
    with pytest.raises(DriverError, match="device id"):
        lab.machine.plug_disk(5, lab.data_socket, "not an id")
    with pytest.raises(DriverError, match="has no device 'nothing'"):
        lab.machine.unplug("nothing")
    lab.machine.unplug("nothing", missing_ok=True)  # nothing to do
    with pytest.raises(DriverError, match="cannot plug 'nic-6'"):  # its tap is missing: the live plug fails
        lab.machine.plug_net(6, "tap-missing", "52:54:00:12:34:06", "nic-6")
    assert [device.alias for device in lab.machine.devices()] == ["boot", "nic-2", "data"]
    connection = connect(lab.daemon.uri)
    try:  # and the definition, which takes the device first, got it back out
        definition = connection.lookupByName(lab.machine.name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        connection.close()
    assert "ua-nic-6" not in definition and "ua-data" in definition


def test_unplugging_returns_once_the_devices_are_gone(lab: Lab):
    for alias, key, name in (("nic-2", "PCI", "0000:43:00.0"), ("data", "PCI", "0000:44:00.0")):
        started = time.monotonic()
        lab.machine.unplug(alias)
        TIMINGS[f"unplug {alias} (returns: gone from the live XML)"] = time.monotonic() - started
        assert alias not in [device.alias for device in lab.machine.devices()]
        wait_for(not_in_guest(lab.console, key, name), f"{name} to leave the guest")
        TIMINGS[f"unplug {alias} -> gone in guest"] = time.monotonic() - started
    sees = guest_sees(lab.console)
    assert "eth0" not in sees["NET"] and "vdb" not in sees["BLK"] and "vda" in sees["BLK"]
    assert [device.alias for device in lab.machine.devices()] == ["boot"]


def test_a_machine_that_cannot_start_stays_off(lab: Lab):
    broken = HostMachine(lab.daemon.uri, f"{lab.machine.name}-broken")
    definition = domain_xml(broken.name, console_log=lab.workdir / "broken.log",
                            command_socket=lab.workdir / "broken.sock")
    broken.define(definition)
    try:
        with pytest.raises(DriverError, match="defined already"):
            broken.define(definition)
        broken.plug_net(0, "tap-missing", "52:54:00:12:34:99", "nic")
        with pytest.raises(DriverError, match="cannot start domain"):
            broken.start()
        assert broken.state() == "off"
        assert broken.name not in lab.daemon.qemu_pids()
    finally:
        broken.undefine()
    assert not broken.exists()
    broken.undefine()  # nothing left to remove: fine


# ------------------------------------------------------------ power (in order)
def test_destroy_powers_off_and_qemu_is_gone(lab: Lab):
    qemu = lab.daemon.qemu_pids()[lab.machine.name]
    started = time.monotonic()
    lab.machine.destroy()
    TIMINGS["destroy"] = time.monotonic() - started
    assert lab.machine.state() == "off"
    assert lab.machine.name not in lab.daemon.qemu_pids()
    assert processes.run_state(qemu) in (None, "Z")
    lab.machine.destroy()  # already off: fine


def test_a_device_plugged_while_off_is_there_at_the_next_start(lab: Lab):
    tap = f"tap{lab.netns.split('-')[1]}"
    nic = lab.machine.plug_net(5, tap, "52:54:00:12:34:05", "nic-5")
    assert nic.bdf == "0000:46:00.0"
    assert [device.alias for device in lab.machine.devices()] == ["boot", "nic-5"]  # the definition's
    since = len(console_text(lab.console))
    started = time.monotonic()
    lab.machine.start()
    wait_for(in_guest(lab.console, "PCI", "0000:46:00.0", since), "the NIC plugged while off", BOOT_TIMEOUT)
    TIMINGS["second start -> guest lists its devices"] = time.monotonic() - started
    wait_for(in_guest(lab.console, "NET", "eth0", since), "eth0 after the start")
    assert "vda" in guest_sees(lab.console, since)["BLK"]
    assert [device.alias for device in lab.machine.devices()] == ["boot", "nic-5"]  # the running machine's


def test_reset_boots_the_guest_again(lab: Lab):
    boots = console_text(lab.console).count("GUEST-INIT-UP")
    started = time.monotonic()
    lab.machine.reset()
    wait_for(lambda: console_text(lab.console).count("GUEST-INIT-UP") > boots, "the guest to boot again", BOOT_TIMEOUT)
    TIMINGS["reset -> guest /init output"] = time.monotonic() - started
    assert lab.machine.state() == "on"


def test_shutdown_presses_the_power_button(lab: Lab):
    started = time.monotonic()
    deadline = started + BOOT_TIMEOUT
    while lab.machine.state() == "on":  # a press before the guest opened its button device is not seen: again
        assert time.monotonic() < deadline, "the guest never took the power button press"
        lab.machine.shutdown()
        with contextlib.suppress(DriverError):
            lab.machine.wait_state("off", 2.0)
    TIMINGS["shutdown (ACPI) -> off"] = time.monotonic() - started
    assert "GUEST-POWER-BUTTON" in console_text(lab.console)
    assert lab.machine.name not in lab.daemon.qemu_pids()
    with pytest.raises(DriverError, match="is off"):
        lab.machine.reset()


def test_stopping_a_daemon_known_only_by_its_pidfile_leaves_no_qemu(lab: Lab):
    lab.machine.start()
    qemu = lab.daemon.qemu_pids()[lab.machine.name]
    libvirtd = lab.daemon.pid
    forgotten = LibvirtDaemon(lab.daemon.dir, lab.netns, cache=lab.workdir / "cache")  # as after a crash of the lab
    started = time.monotonic()
    forgotten.stop()
    TIMINGS["daemon stop with a running machine"] = time.monotonic() - started
    assert processes_of(lab.daemon) == []
    assert processes.run_state(qemu) in (None, "Z") and processes.run_state(libvirtd) in (None, "Z")
    assert not (lab.daemon.dir / "run/libvirtd.pid").exists()
    assert list((lab.daemon.dir / "run/libvirt/qemu").glob("*.pid")) == []
    assert not lab.daemon.alive
    lab.daemon.stop()  # stopped already: fine
