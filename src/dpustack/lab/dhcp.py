"""One bounded DHCP exchange inside a lab host namespace (isc-dhcp-client's ``dhclient``).

``dhclient`` runs in the foreground (``-d -1``) with a stand-in for
dhclient-script that only sets the leased address (never /etc/resolv.conf,
never a route) and writes the script's environment to a file; once that file
says BOUND the client is stopped. Foreground, so the process stopped is the
one started here, never a daemon found through a pidfile written later.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dpustack.lab import netns

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
CONF = ("timeout 15;\nretry 1;\ninitial-interval 1;\n"
        "request subnet-mask, routers, interface-mtu, classless-static-routes;\n")


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
    return DhcpResult(reason=lease.get("reason", ""), addresses=ipv4_addresses(namespace, ifname),
                      lease={k: v for k, v in lease.items() if k.startswith("new_") or k == "reason"},
                      output=log.read_text(errors="replace"))
