"""One bounded DHCP exchange inside a lab host namespace (isc-dhcp-client's ``dhclient``).

``dhclient`` runs in the foreground (``-d -1``) with a stand-in for
dhclient-script that only sets the leased address (never /etc/resolv.conf)
and writes the script's environment to a file; once that file says BOUND the
client is stopped, and the lease's MTU and classless static routes (the
on-link route to the metadata service among them) are applied. Foreground, so the process stopped is the
one started here, never a daemon found through a pidfile written later.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dpustack.linux import netns

SCRIPT = """#!/bin/sh
# dhclient-script stand-in: set the leased address only (never touch /etc/resolv.conf)
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
esac
env > "$DPS_DHCP_ENV.tmp" && mv "$DPS_DHCP_ENV.tmp" "$DPS_DHCP_ENV"  # last: the caller waits for it
exit 0
"""
CONF = ("option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n"
        "timeout 15;\nretry 1;\ninitial-interval 1;\n"
        "request subnet-mask, routers, interface-mtu, rfc3442-classless-static-routes;\n")


@dataclass
class DhcpResult:
    """What one exchange gave: the script's last ``reason``, the addresses now on the interface,
    the lease as the script saw it (``new_*`` variables) and dhclient's output."""

    reason: str
    addresses: list[str]
    lease: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def bound(self) -> bool:
        return self.reason in ("BOUND", "REBOOT")

    @property
    def mtu(self) -> int | None:
        value = self.lease.get("new_interface_mtu", "")
        return int(value) if value.isdigit() else None

    @property
    def routes(self) -> list[tuple[str, str]]:
        """The classless static routes (RFC 3442) as (destination CIDR, router); router 0.0.0.0: on-link."""
        octets = [int(part) for part in self.lease.get("new_rfc3442_classless_static_routes", "").split()]
        routes = []
        while octets:
            length = octets.pop(0)
            significant = (length + 7) // 8
            destination = octets[:significant] + [0] * (4 - significant)
            router = octets[significant:significant + 4]
            del octets[:significant + 4]
            routes.append((f"{'.'.join(map(str, destination))}/{length}", ".".join(map(str, router))))
        return routes


def ipv4_addresses(namespace: str, ifname: str) -> list[str]:
    """The IPv4 addresses (with prefix length) on ``ifname`` inside ``namespace``."""
    out = netns.run(namespace, ["ip", "-4", "-o", "addr", "show", "dev", ifname]).stdout
    return re.findall(r"inet (\S+)", out)


def dhcp_once(namespace: str, ifname: str, workdir: Path, timeout: float = 20.0) -> DhcpResult:
    """Run dhclient on ``ifname`` in ``namespace`` until it is bound (or ``timeout``), then stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "dhclient-script.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    conf = workdir / "dhclient.conf"
    conf.write_text(CONF)
    tag = f"{namespace}-{ifname}"
    env_file = workdir / f"{tag}.env"
    env_file.unlink(missing_ok=True)
    log = workdir / f"{tag}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", namespace, "dhclient", "-d", "-1", "-v", "-cf", str(conf),
                                 "-sf", str(script), "-pf", str(workdir / f"{tag}.pid"),
                                 "-lf", str(workdir / f"{tag}.leases"), "-e", f"DPS_DHCP_ENV={env_file}", ifname],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lease: dict[str, str] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if env_file.exists():
                lease = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
                if lease.get("reason") in ("BOUND", "REBOOT"):
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    result = DhcpResult(reason=lease.get("reason", ""), addresses=ipv4_addresses(namespace, ifname),
                        lease={k: v for k, v in lease.items() if k.startswith("new_") or k == "reason"},
                        output=log.read_text(errors="replace"))
    if result.bound:
        apply_lease(namespace, ifname, result)
    return result


def apply_lease(namespace: str, ifname: str, result: DhcpResult) -> None:
    """What a booting instance does with its lease besides the address: the MTU and the classless routes."""
    if result.mtu:
        netns.run(namespace, ["ip", "link", "set", "dev", ifname, "mtu", str(result.mtu)])
    for destination, router in result.routes:
        via = ["dev", ifname] if router == "0.0.0.0" else ["via", router, "dev", ifname, "onlink"]
        netns.run(namespace, ["ip", "-4", "route", "replace", destination, *via])
