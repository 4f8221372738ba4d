"""A lab host boots the host image from a vhost-user-blk disk and does what cloud-init would.

One guest (conftest's ``booted_host``) is shared by the tests here: QEMU under TCG boots the image that
qemu-storage-daemon exports, behind a root port of a pxb-pcie expander; its NIC is a tap in a test
namespace where busybox udhcpd leases it an address and a Python HTTP server plays the metadata service.
What the guest did is read from its console's step lines; what it is, through its agent on ttyS1
(dpustack.lab.guest_agent) and a login on ttyS0.
"""

from __future__ import annotations

import base64
import socket
import time

from dpustack.lab import guest_agent
from guest_data import ADMIN_PASS, METADATA, PUBLIC_KEY
from host_guest import HostGuest

DHCP_TIMEOUT = 60.0
UNPLUG_TIMEOUT = 30.0


def steps_named(guest: HostGuest, name: str) -> list[dict]:
    return [step for step in guest.steps() if step["step"] == name]


def test_the_host_boots_from_its_disk_and_does_what_its_metadata_says(booted_host, host_image, network):
    steps = booted_host.steps()
    names = [step["step"] for step in steps]
    assert "failed" not in names, steps

    boot = steps_named(booted_host, "boot")[0]
    assert boot["disk"] == "/dev/vda" and boot["label"] == "DPUSTACK"
    assert boot["bdf"] == booted_host.pci_address("disk0")  # behind rp0 of the expander (bus 64 on)
    assert int(boot["bdf"].split(":")[1], 16) > 64
    assert boot["image"] == host_image.image_id  # the FAT volume is the image built
    assert boot["kernel"] == "/vmlinuz"  # syslinux loaded the kernel (BOOT_IMAGE on the command line)

    first = network.subnets[0]
    dhcp = steps_named(booted_host, "dhcp")[0]
    assert dhcp == {"step": "dhcp", "nic": "eth0", "mac": first.mac, "address": f"{first.guest}/24",
                    "router": first.address}
    assert steps_named(booted_host, "metadata") == [{"step": "metadata", "uuid": METADATA["uuid"],
                                                      "hostname": METADATA["hostname"]}]
    assert steps_named(booted_host, "hostname") == [{"step": "hostname", "hostname": "lab-host-1"}]
    assert steps_named(booted_host, "password") == [{"step": "password", "set": 1}]
    assert steps_named(booted_host, "keys") == [{"step": "keys", "count": 1}]
    assert steps_named(booted_host, "user-data") == [{"step": "user-data", "status": 0}]
    assert "USER-DATA-MARKER-42" in booted_host.console()  # the script's output, on the console
    assert names.index("ready") > names.index("user-data")
    assert network.requests[:2] == ["/openstack/latest/meta_data.json", "/openstack/latest/user_data"]


def test_the_agent_runs_commands_in_the_guest(booted_host):
    agent = booted_host.agent_socket
    assert guest_agent.run(agent, "hostname", 20) == (0, b"lab-host-1\n")
    status, keys = guest_agent.run(agent, ["cat", "/root/.ssh/authorized_keys"], 20)
    assert status == 0 and keys.decode().splitlines() == [PUBLIC_KEY]
    assert guest_agent.run(agent, "cat /root/user-data-ran", 20) == (0, b"ran\n")
    assert guest_agent.run(agent, ["sh", "-c", "exit 3"], 20) == (3, b"")
    every_byte = bytes(range(256))
    status, output = guest_agent.run(agent, f"echo {base64.b64encode(every_byte).decode()} | base64 -d; "
                                            "echo to-stderr >&2", 20)
    assert (status, output) == (0, every_byte + b"to-stderr\n")
    status, routes = guest_agent.run(agent, "ip route", 20)
    assert {"default via 10.0.0.1 dev eth0", "169.254.169.254 dev eth0 scope link"} <= \
        {line.strip() for line in routes.decode().splitlines()}, routes


def test_the_agent_passes_over_what_an_earlier_client_left(booted_host):
    with socket.socket(socket.AF_UNIX) as earlier:  # a client breaking off in the middle of a request
        earlier.connect(str(booted_host.agent_socket))
        earlier.sendall(b"Q deadbeef 10 " + base64.b64encode(b"echo half; touch /root/half-ran"))
    assert guest_agent.run(booted_host.agent_socket, "echo whole", 20) == (0, b"whole\n")
    assert guest_agent.run(booted_host.agent_socket, "ls /root/half-ran", 20)[0] != 0

    with socket.socket(socket.AF_UNIX) as earlier:  # one that leaves before its reply comes
        earlier.connect(str(booted_host.agent_socket))
        earlier.sendall(b"\nQ cafe 10 " + base64.b64encode(b"sleep 1; echo late") + b" .\n")
    assert guest_agent.run(booted_host.agent_socket, "echo mine", 20) == (0, b"mine\n")


def test_root_logs_in_on_the_console_with_the_admin_password(booted_host):
    with socket.socket(socket.AF_UNIX) as console:
        console.connect(str(booted_host.console_socket))
        console.settimeout(30)
        seen = b""

        def until(text: bytes) -> None:
            nonlocal seen
            deadline = time.monotonic() + 30
            while text not in seen:
                assert time.monotonic() < deadline, f"no {text!r} on the console; it showed:\n{seen[-2000:]!r}"
                seen += console.recv(4096)

        console.sendall(b"\r")
        until(b"lab-host-1 login: ")
        console.sendall(b"root\r")
        until(b"Password: ")
        console.sendall(ADMIN_PASS.encode() + b"\r")
        until(b"lab-host-1:~# ")
        console.sendall(b"echo LOGGED-IN-$((6 * 7)) as $(id -un)\r")
        until(b"LOGGED-IN-42 as root")
        console.sendall(b"exit\r")
        until(b"lab-host-1 login: ")  # the getty is back


def test_a_hot_plugged_nic_gets_a_lease_and_its_removal_is_seen(booted_host, network, timings):
    second = network.subnets[1]
    before = len(booted_host.steps())
    booted_host.qmp("netdev_add", type="tap", id="net1", ifname=second.tap, script="no", downscript="no")
    plugged = time.monotonic()
    booted_host.qmp("device_add", driver="virtio-net-pci", id="nic1", netdev="net1", mac=second.mac, bus="rp2",
                    romfile="")
    dhcp = booted_host.wait_for_step(lambda step: step["step"] == "dhcp", DHCP_TIMEOUT, after=before)
    timings["hot-plug -> DHCP"] = time.monotonic() - plugged
    assert dhcp == {"step": "dhcp", "nic": "eth1", "mac": second.mac, "address": f"{second.guest}/24",
                    "router": second.address}
    status, routing = guest_agent.run(booted_host.agent_socket,
                                      "ip route show default; ip rule; ip route get 10.9.9.9 from 10.0.1.5", 20)
    text = routing.decode()
    assert status == 0 and text.startswith("default via 10.0.0.1 dev eth0 ")  # still the first NIC's
    assert "from 10.0.1.5 lookup" in text and "via 10.0.1.1 dev eth1" in text  # its own table

    before = len(booted_host.steps())
    booted_host.qmp("device_del", id="nic1")
    unplugged = time.monotonic()
    gone = booted_host.wait_for_step(lambda step: step["step"] == "nic-gone", UNPLUG_TIMEOUT, after=before)
    timings["device_del -> nic-gone"] = time.monotonic() - unplugged
    assert gone == {"step": "nic-gone", "nic": "eth1"}
    status, rules = guest_agent.run(booted_host.agent_socket, "ip rule", 20)
    assert "10.0.1.5" not in rules.decode()
    booted_host.qmp("netdev_del", id="net1")


def test_a_bare_metal_host_has_no_guest_agent_channel_and_runs_no_qemu_ga(booted_host):
    assert "guest-agent" not in [step["step"] for step in booted_host.steps()]
    status, output = guest_agent.run(booted_host.agent_socket, "ls /sys/class/virtio-ports 2>/dev/null | wc -l; "
                                     "ps -o comm | grep -c qemu-ga; ls -l /usr/sbin/qemu-ga", 20)
    ports, agents, program = output.decode().splitlines()
    assert (ports, agents) == ("0", "0"), output  # the init script waits, it did not start qemu-ga
    assert program.startswith("-rwxr-xr-x")  # the image has it all the same
