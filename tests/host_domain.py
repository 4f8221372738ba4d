"""A lab host as the lab makes it, for integration tests: a libvirt domain on a private libvirtd, booting the host
image from a qemu-storage-daemon vhost-user-blk disk, its NIC on a tap with DHCP and a metadata service.

    with host_domain(image.path, METADATA, cache=libvirt_cache) as host:
        host.machine.start()
        host.wait_for_step("ready", count=1, timeout=120)

The namespace, its tap, DHCP server and metadata service are :func:`host_guest.host_network`'s; in that
namespace run qemu-storage-daemon (a qcow2 overlay of the image, exported as vhost-user-blk) and
:class:`dpustack.lab.libvirt_daemon.LibvirtDaemon`, on which :func:`dpustack.lab.host_machine.define_host`
defines the domain, off, with the boot disk in slot 0 and the NIC (``tap0``) in slot 1. ttyS0 is logged to
``console_log`` (where the step lines are read); ttyS1 is ``agent_socket``. On the way out the daemon is
stopped (it kills its QEMU), the storage daemon killed by PID and the files removed.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpustack.lab import processes
from dpustack.lab.host_init import step_lines
from dpustack.lab.host_machine import define_host
from dpustack.lab.libvirt_daemon import LIBVIRTD, LibvirtDaemon
from dpustack.libvirt_host import HostMachine
from host_guest import HostNetwork, host_network
from storage_daemons import QSD, Daemon


@dataclass
class HostDomain:
    """The running pieces of one lab host."""

    network: HostNetwork
    daemon: LibvirtDaemon
    machine: HostMachine
    console_log: Path
    agent_socket: Path

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def steps(self) -> list[str]:
        """The names of the step lines on the console so far, in order."""
        return [step["step"] for step in step_lines(self.console())]

    def wait_for_step(self, name: str, *, count: int, timeout: float) -> float:
        """Wait until the console holds ``count`` step lines ``name``; the seconds it took. AssertionError
        with the end of the console if it does not in ``timeout`` s."""
        started = time.monotonic()
        while self.steps().count(name) < count:
            assert time.monotonic() - started < timeout, (
                f"{self.steps().count(name)} of {count} '{name}' steps after {timeout:g} s; "
                f"console:\n{self.console()[-3000:]}")
            time.sleep(0.05)
        return time.monotonic() - started

    def qemu_pid(self) -> int | None:
        """The PID of the domain's QEMU, None when it runs none."""
        return self.daemon.qemu_pids().get(self.machine.name)

    def wait_qemu_gone(self, pid: int, timeout: float = 15.0) -> float:
        """Wait until QEMU ``pid`` has exited (the daemon's reaper reaps it); the seconds it took."""
        started = time.monotonic()
        while processes.run_state(pid) not in (None, "Z"):
            assert time.monotonic() - started < timeout, f"QEMU (pid {pid}) still runs after {timeout:g} s"
            time.sleep(0.01)
        return time.monotonic() - started


@contextmanager
def host_domain(image: Path, metadata: dict[str, Any], *, cache: Path, memory_mib: int = 1024,
                vcpus: int = 1) -> Iterator[HostDomain]:
    """A lab host booting ``image``, off, whose metadata service serves ``metadata`` (and no user data)."""
    for tool in (LIBVIRTD, QSD):
        assert Path(tool).exists(), f"{tool} is missing: apt-get install libvirt-daemon libvirt-daemon-driver-qemu " \
                                    "qemu-system-x86"
    workdir = Path(tempfile.mkdtemp(prefix="bmch-", dir="/tmp"))  # short: unix socket paths
    with host_network(metadata, None) as network:
        overlay, disk = workdir / "boot.qcow2", workdir / "boot.sock"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "raw", str(overlay)],
                       check=True)
        storage = Daemon(network.namespace, workdir, "qsd", [
            "--blockdev", f"driver=file,node-name=file0,filename={overlay}",
            "--blockdev", "driver=qcow2,node-name=boot,file=file0",
            "--export", f"type=vhost-user-blk,id=boot,node-name=boot,writable=on,addr.type=unix,addr.path={disk}"])
        daemon = LibvirtDaemon(workdir / "lv", network.namespace, cache=cache)
        try:
            storage.start()
            daemon.start()
            console_log, agent_socket = workdir / "console.log", workdir / "ttyS1.sock"
            machine = define_host(daemon.uri, f"bmc-host-{secrets.token_hex(3)}", console_log=console_log,
                                  command_socket=agent_socket, memory_mib=memory_mib, vcpus=vcpus)
            machine.plug_disk(0, disk, "boot", boot_order=1)
            machine.plug_net(1, network.subnets[0].tap, network.subnets[0].mac, "nic0")
            yield HostDomain(network, daemon, machine, console_log, agent_socket)
        finally:
            daemon.stop()
            storage.kill()
            shutil.rmtree(workdir, ignore_errors=True)
