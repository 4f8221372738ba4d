"""Per-port packet-rate limits on an OVS bridge: one OpenFlow ``pktps`` meter and one table-0 flow per port.

    meters = PacketRateMeters("/run/openvswitch", timeout=10)
    meters.apply("br-int", "pf0vf3", ofport=7, pps=1000)
    meters.read("br-int", "pf0vf3", ofport=7)      # 1000, or None once something wiped them

Why a flow of our own: OVN 23.03's QoS rules meter kbit/s only, and OVS
Interface packet-rate policing is a Linux tc policer, which limits nothing in
the userspace datapath. An OpenFlow meter does limit there. On ``br-int`` the
flows are ovn-controller's; ours sits ahead of its table-0 flow for the port:

    table=0,priority=1000,cookie=C,in_port=OFPORT,metadata=0,
        actions=meter:M,set_field:0xffffff->metadata,resubmit(,0)

``metadata`` is 0 when a packet arrives and ovn-controller's table-0 flow sets
it, so marking it keeps the resubmitted packet from matching our flow again.
ovn-controller leaves foreign flows alone when it recomputes, but deletes
every flow and meter on the bridge when it (re)connects to ovs-vswitchd: the
caller (the agent's reconcile) reads the limit back and applies it again.

Meter id and cookie are derived from the port name (CRC-32 of it, 24 bits),
far above the meter ids ovn-controller allocates (1, 2, ...). Commands go
through ``ovs-ofctl -O OpenFlow13`` to ovs-vswitchd's management socket for
the bridge, ``<rundir>/<bridge>.mgmt``.
"""

from __future__ import annotations

import re
import subprocess
import zlib
from pathlib import Path

from dpustack.errors import DriverError

#: meter ids: METER_BASE + 24-bit hash; below OpenFlow's OFPM_MAX (0xffff0000)
METER_BASE = 0x1000000
#: cookies: COOKIE_TAG in the high 32 bits, the same 24-bit hash in the low ones
COOKIE_TAG = 0xD95000C5
#: priority above ovn-controller's table-0 flows (100)
FLOW_PRIORITY = 1000
#: the meter's burst, as a share of the rate (at least one packet)
BURST_SHARE = 0.1
#: the largest rate a meter band holds (32 bits)
MAX_PPS = 0xFFFFFFFF

_PKTPS_RATE = re.compile(r"type=drop rate=(\d+)")


def meter_id(port_name: str) -> int:
    """The meter of ``port_name`` (the same on every call, every node)."""
    return METER_BASE + (zlib.crc32(port_name.encode()) & 0xFFFFFF)


def cookie(port_name: str) -> str:
    """The cookie of ``port_name``'s flow, as ovs-ofctl writes it."""
    return f"{(COOKIE_TAG << 32) | (zlib.crc32(port_name.encode()) & 0xFFFFFF):#x}"


class PacketRateMeters:
    """``ovs-ofctl`` against ``<rundir>/<bridge>.mgmt``; every failure is a DriverError naming the port."""

    def __init__(self, rundir: str | Path, *, timeout: float = 10.0, ofctl: str = "ovs-ofctl"):
        self.rundir = Path(rundir)
        self.timeout = timeout
        self.ofctl = ofctl

    def apply(self, bridge: str, port_name: str, *, ofport: int, pps: int) -> None:
        """Install (or replace) the port's meter and flow; a flow left on an older ofport goes."""
        meter, flow_cookie = meter_id(port_name), cookie(port_name)
        burst = max(1, int(pps * BURST_SHARE))
        band = f"meter={meter},pktps,burst,stats,band=type=drop,rate={pps},burst_size={burst}"
        verb = "mod-meter" if self._meter_rate(bridge, port_name, meter) is not None else "add-meter"
        self._run(bridge, port_name, verb, band)
        self._run(bridge, port_name, "del-flows", f"cookie={flow_cookie}/-1")
        self._run(bridge, port_name, "add-flow",
                  f"table=0,priority={FLOW_PRIORITY},cookie={flow_cookie},in_port={ofport},metadata=0,"
                  f"actions=meter:{meter},set_field:0xffffff->metadata,resubmit(,0)")

    def remove(self, bridge: str, port_name: str) -> None:
        """Delete the port's flow, then its meter; nothing there is fine."""
        self._run(bridge, port_name, "del-flows", f"cookie={cookie(port_name)}/-1")
        self._run(bridge, port_name, "del-meters", f"meter={meter_id(port_name)}")

    def read(self, bridge: str, port_name: str, *, ofport: int) -> int | None:
        """The rate in force: the meter's pktps rate if the port's flow is there, on ``ofport``, using it."""
        meter = meter_id(port_name)
        flows = self._run(bridge, port_name, "dump-flows", f"cookie={cookie(port_name)}/-1")
        wanted = re.compile(rf"\bin_port={ofport}\b.*\bmeter:{meter}\b")
        if not any(wanted.search(line) for line in flows.splitlines()):
            return None
        return self._meter_rate(bridge, port_name, meter)

    # ------------------------------------------------------------- helpers
    def _meter_rate(self, bridge: str, port_name: str, meter: int) -> int | None:
        lines = self._run(bridge, port_name, "dump-meters", f"meter={meter}").splitlines()
        for line, band in zip(lines, lines[1:]):
            if f"meter={meter} " in line and " pktps " in line and (match := _PKTPS_RATE.search(band)):
                return int(match.group(1))
        return None

    def _run(self, bridge: str, port_name: str, command: str, argument: str) -> str:
        target = f"unix:{self.rundir / f'{bridge}.mgmt'}"
        args = [self.ofctl, "-O", "OpenFlow13", "--no-names", f"--timeout={max(1, round(self.timeout))}", command, target, argument]
        what = f"switch.set_packet_rate: port '{port_name}' on {bridge}: `ovs-ofctl {command}`"
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout + 5,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise DriverError(f"{what}: ovs-ofctl is not installed (package openvswitch-common)") from exc
        except subprocess.TimeoutExpired as exc:
            raise DriverError(f"{what}: no answer from ovs-vswitchd within {self.timeout:g} s") from exc
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()
            detail = reason[-1] if reason else f"exit {done.returncode}"
            if "No such file" in detail or "Connection refused" in detail:
                detail += f" (is ovs-vswitchd running, with its sockets in {self.rundir}? [switch.ovs] rundir)"
            raise DriverError(f"{what} failed: {detail}")
        return done.stdout
