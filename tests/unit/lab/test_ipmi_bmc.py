"""The IPMI emulator's pieces that need no network: host power in memory and on a domain, its options, and
where its Serial-over-LAN wakes it."""

from __future__ import annotations

import socket

import pytest

from dpustack.lab import bmcs
from dpustack.lab.ipmi_bmc import DomainPower, MemoryPower, main
from dpustack.lab.ipmi_sol import _local_address
from dpustack.lab.state import LabError


def test_memory_power_switches_at_once_and_a_restart_changes_nothing():
    power = MemoryPower("off")
    assert power.apply("on") == "host power is on" and power.state() == "on"
    assert power.apply("reset") is None and power.apply("cycle") is None and power.state() == "on"
    assert power.apply("soft") == "host power is off" and power.state() == "off"


class Machine:
    """A HostMachine that records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.on = False

    def state(self) -> str:
        return "on" if self.on else "off"

    def start(self) -> None:
        self.calls.append("start")
        self.on = True

    def destroy(self) -> None:
        self.calls.append("destroy")
        self.on = False

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def reset(self) -> None:
        self.calls.append("reset")


@pytest.mark.parametrize("action, calls, said", [
    ("on", ["start"], "host power is on"),
    ("off", ["destroy"], "host power is off"),
    ("soft", ["shutdown"], "ACPI power button pressed: the guest decides"),
    ("reset", ["reset"], None),
    ("cycle", ["destroy", "start"], None),
])
def test_domain_power_is_what_libvirt_does_to_the_domain(action, calls, said):
    machine = Machine()
    assert DomainPower(machine).apply(action) == said
    assert machine.calls == calls


@pytest.mark.parametrize("extra, message", [
    (["--domain", "host-1"], "--libvirt-uri and --domain go together"),
    (["--libvirt-uri", "qemu:///system"], "--libvirt-uri and --domain go together"),
    (["--libvirt-uri", "qemu:///system", "--domain", "host-1", "--power", "on"], "a domain's power is its own"),
])
def test_the_domain_options_go_together(tmp_path, capsys, extra, message):
    (tmp_path / "pw").write_text("secret\n")
    with pytest.raises(SystemExit) as exited:
        main(["--port", "6230", "--user", "admin", "--password-file", str(tmp_path / "pw"), *extra])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_start_ipmi_refuses_half_a_domain_and_a_power_for_one(tmp_path):
    with pytest.raises(LabError, match="needs both libvirt_uri and domain"):
        bmcs.start_ipmi(tmp_path, domain="host-1")
    with pytest.raises(LabError, match="power of domain 'host-1' is its own"):
        bmcs.start_ipmi(tmp_path, libvirt_uri="qemu:///system", domain="host-1", power="on")
    assert list(tmp_path.iterdir()) == []  # refused before anything was started or written


@pytest.mark.parametrize("family, bound, reached", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET, "0.0.0.0", "127.0.0.1"),
    (socket.AF_INET6, "::", "::1"),
])
def test_the_bmc_is_woken_where_this_host_reaches_it(family, bound, reached):
    with socket.socket(family, socket.SOCK_DGRAM) as server:
        server.bind((bound, 0))
        address = _local_address(server)
        assert address[0] == reached and address[1] == server.getsockname()[1]
