"""Measure what a path between two lab namespaces lets through: one bounded UDP blast.

    rate = measure_udp("lab-host-1", "lab-host-2", "10.50.0.12", seconds=2.0, payload=1000)
    print(rate.bits_per_second, rate.packets_per_second)

A receiver (a short Python program run with ``ip netns exec`` in the
destination namespace) binds a UDP port and counts datagrams; a sender in the
source namespace sends fixed-size datagrams to it, as fast as it can or at
``offered_pps``, for ``warmup`` + ``seconds``; ``drain`` seconds after the
sender stops the receiver is told (on its stdin) to report. Both are ordinary child processes:
they are bounded by the duration and a hard timeout, and are killed by PID
if they outlive it. No iperf3 is needed (the lab's machines do not have it).

Rates are steady-state: the first byte of each datagram says whether it is
counted, and the datagrams of the first ``warmup`` seconds (default 0.5) are
not, so a limiter's burst allowance is spent before counting starts (with
``warmup=0`` it is spread over the run instead: a meter with burst B lets
through about rate + B/seconds). Rates are over the sender's counted time.
``bits_per_second`` counts whole Ethernet frames (payload + 42 bytes of
Ethernet, IPv4 and UDP headers): what an OVS meter counts.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass

from dpustack.lab.state import LabError

#: Ethernet (14) + IPv4 (20) + UDP (8) headers: what a frame adds to the UDP payload.
FRAME_OVERHEAD = 42
DEFAULT_PORT = 47999
MAX_SECONDS = 60.0

# Receiver: count datagrams until a line arrives on stdin; print one JSON line.
_RECEIVER = r"""
import json, select, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("0.0.0.0", int(sys.argv[1])))
sock.setblocking(False)
print("ready", flush=True)
packets = octets = 0
buf = bytearray(65536)
while True:
    readable, _, _ = select.select([sock, sys.stdin], [], [], 1.0)
    if sys.stdin in readable:
        break
    while True:
        try:
            n = sock.recv_into(buf)
        except BlockingIOError:
            break
        if buf[0] == 1:  # 0: a warm-up datagram, not counted
            packets += 1
            octets += n
print(json.dumps({"packets": packets, "bytes": octets}), flush=True)
"""

# Sender: datagrams of the given size for the given seconds, paced if a rate is given.
_SENDER = r"""
import errno, json, socket, sys, time
ip, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
warmup, seconds, pps = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
sock.connect((ip, port))
gap = 1.0 / pps if pps > 0 else 0.0

def blast(data, seconds):
    sent = refused = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            return sent, refused, now - start
        if gap:
            due = start + sent * gap
            if due > now:
                time.sleep(min(due - now, end - now))
                continue
        for _ in range(1 if gap else 64):
            try:
                sock.send(data)
                sent += 1
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
                    raise
                refused += 1

if warmup > 0:
    blast(bytes(size), warmup)
sent, refused, elapsed = blast(b"\x01" + bytes(size - 1), seconds)
print(json.dumps({"sent": sent, "refused": refused, "seconds": elapsed}), flush=True)
"""


class TrafficError(LabError):
    """The sender or receiver could not be started, failed, or did not report in time."""


@dataclass(frozen=True)
class Rate:
    """What one blast delivered: counts at the receiver over the sender's ``seconds``."""

    seconds: float
    payload: int
    sent_packets: int
    packets: int
    bytes: int  # UDP payload bytes received

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0

    @property
    def bits_per_second(self) -> float:
        """Received Ethernet frame bits per second (payload plus FRAME_OVERHEAD per packet)."""
        return (self.bytes + FRAME_OVERHEAD * self.packets) * 8 / self.seconds if self.seconds else 0.0

    @property
    def offered_packets_per_second(self) -> float:
        return self.sent_packets / self.seconds if self.seconds else 0.0

    @property
    def loss(self) -> float:
        """Share of the sent datagrams that did not arrive (0..1)."""
        return 1 - self.packets / self.sent_packets if self.sent_packets else 0.0

    def __str__(self) -> str:
        return (f"{self.bits_per_second / 1e6:.2f} Mbit/s, {self.packets_per_second:.0f} pkt/s received "
                f"of {self.offered_packets_per_second:.0f} pkt/s sent ({self.payload}-byte payload, "
                f"{self.seconds:.2f} s)")


def measure_udp(src_ns: str, dst_ns: str, dst_ip: str, *, seconds: float = 2.0, payload: int = 1000,
                port: int = DEFAULT_PORT, offered_pps: float | None = None, warmup: float = 0.5,
                drain: float = 0.3) -> Rate:
    """Send UDP from ``src_ns`` to ``dst_ip:port`` (a receiver in ``dst_ns``); count what arrives.

    The sender runs ``warmup`` seconds uncounted, then ``seconds`` counted.
    ``payload`` is the UDP payload size in bytes (1-1472 keeps a datagram in
    one 1500-byte frame); ``offered_pps`` paces the sender (default: as fast
    as it can). Raises TrafficError if a side fails or overruns its bound.
    """
    if not 0 < seconds <= MAX_SECONDS or not 0 <= warmup <= MAX_SECONDS:
        raise TrafficError(f"seconds and warmup must be at most {MAX_SECONDS:g} (seconds above 0), "
                           f"not {seconds!r} and {warmup!r}")
    if not 1 <= payload <= 65507:
        raise TrafficError(f"payload must be 1-65507 bytes, not {payload!r}")
    if offered_pps is not None and offered_pps <= 0:
        raise TrafficError(f"offered_pps must be positive, not {offered_pps!r}")
    receiver = _start(dst_ns, _RECEIVER, str(port))
    try:
        _wait_ready(receiver, dst_ns)
        sender = _run(src_ns, _SENDER, dst_ip, str(port), str(payload), str(warmup), str(seconds),
                      str(offered_pps or 0), timeout=warmup + seconds + 10)
        time.sleep(drain)
        try:
            out, err = receiver.communicate("stop\n", timeout=10)
        except subprocess.TimeoutExpired as exc:
            raise TrafficError(f"the UDP receiver in {dst_ns} did not report within 10 s") from exc
        if receiver.returncode != 0:
            raise TrafficError(f"the UDP receiver in {dst_ns} failed (exit {receiver.returncode}): {err.strip()}")
        received = json.loads(out.strip().splitlines()[-1])
    finally:
        _kill(receiver)
    return Rate(seconds=sender["seconds"], payload=payload, sent_packets=sender["sent"],
                packets=received["packets"], bytes=received["bytes"])


def _argv(namespace: str, program: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, sys.executable, "-c", program, *args]


def _start(namespace: str, program: str, *args: str) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(_argv(namespace, program, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise TrafficError(f"cannot start the UDP receiver in {namespace}: {exc}") from exc


def _wait_ready(receiver: subprocess.Popen[str], namespace: str, timeout: float = 10.0) -> None:
    """Block until the receiver printed "ready" (its socket is bound), or fail."""
    assert receiver.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(receiver.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TrafficError(f"the UDP receiver in {namespace} did not start within {timeout:g} s")
    line = receiver.stdout.readline()
    if line.strip() != "ready":
        err = receiver.stderr.read() if receiver.poll() is not None and receiver.stderr else ""
        raise TrafficError(f"the UDP receiver in {namespace} did not start: {(line + err).strip()}")


def _run(namespace: str, program: str, *args: str, timeout: float) -> dict[str, float]:
    try:
        done = subprocess.run(_argv(namespace, program, *args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise TrafficError(f"the UDP sender in {namespace} did not finish within {timeout:g} s") from exc
    if done.returncode != 0:
        raise TrafficError(f"the UDP sender in {namespace} failed (exit {done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _kill(process: subprocess.Popen[str]) -> None:
    """Stop a child we started (by its PID, through its Popen), and reap it."""
    if process.poll() is None:
        process.kill()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
