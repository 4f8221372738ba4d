"""Serial-over-LAN of the emulated IPMI BMC: its one SOL payload instance, carried between pyghmi's
server-side console and the host's serial console (:class:`dpustack.drivers.bmc.libvirt_console.DomainConsole`).

pyghmi serves IPMI in one thread, which waits for packets
(``Session.wait_for_rsp``) and handles them; the guest's output arrives in
libvirt's event loop thread. So that only the serving thread touches
pyghmi, that output is buffered here (at most :data:`MAX_BUFFERED` bytes,
the newest) and the serving thread is woken by a datagram to the BMC's own
socket too short to be IPMI, which the BMC drops. After every wait the
serving loop calls :meth:`SerialOverLan.pump`, which sends the buffer to the
remote console one SOL packet at a time, each acknowledged before the next
(pyghmi handles other packets while it waits for an acknowledgement).

Activation (IPMI v2.0, 24.1): one instance, for one session at a time, also
while the host is off (its output follows once it runs). A second
activation is refused with 0x80 (active already) until the first ends:
ipmitool leaving (``~.``, end of its input), ``ipmitool sol deactivate``
from any session, or the remote console no longer acknowledging output (a
killed ipmitool: pyghmi gives a packet up after about 12 s of retries).
An ipmitool whose payload another session deactivated is not told; it
stays until it is ended.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading

from pyghmi.ipmi import console as pyghmi_console

from dpustack.drivers.bmc.libvirt_console import DomainConsole

log = logging.getLogger(__name__)

PAYLOAD_SOL = 1
CC_ACTIVE_ALREADY = 0x80  # to a deactivation: not active
CC_INVALID_DATA = 0xCC
PAYLOAD_SIZE = 256  # either way, the 4-byte SOL header included
CHUNK = PAYLOAD_SIZE - 4
MAX_BUFFERED = 256 * 1024
WAKE = b"wake"  # shorter than any IPMI packet
_LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


class _Activation:
    """One activation of the payload, and pyghmi's console for it."""

    def __init__(self, owner: "SerialOverLan", session):
        self.owner = owner
        self.session = session  # pyghmi's server session that activated the payload
        self.sol: pyghmi_console.ServerConsole | None = None

    def from_client(self, data: bytes | dict) -> None:
        """What pyghmi received from the remote console: typed bytes, or a dict saying it broke."""
        if self.owner.active is not self:
            return
        if isinstance(data, dict):
            log.info("SOL ended: %s", data.get("error", data))
            self.owner.end()
        else:
            self.owner.console.write(data)


class SerialOverLan:
    """The SOL payload of the BMC whose UDP socket is ``server_socket``, on the serial console ``console``."""

    def __init__(self, console: DomainConsole, server_socket: socket.socket):
        self.console = console
        self.active: _Activation | None = None
        self._port = server_socket.getsockname()[1]
        self._wake_to = _local_address(server_socket)
        self._waker = socket.socket(server_socket.family, socket.SOCK_DGRAM)
        self._lock = threading.Lock()
        self._buffer = bytearray()

    # ----------------------------------------------- requests (serving thread)
    def activate(self, request: dict, session) -> None:
        """Activate Payload (netfn 6, 0x48)."""
        data = request["data"]
        if len(data) < 2 or data[0] & 0x3F != PAYLOAD_SOL or data[1] != 1:
            return session.send_ipmi_response(code=CC_INVALID_DATA)
        if self.active is not None:
            log.info("SOL activation refused: active for another session already")
            return session.send_ipmi_response(code=CC_ACTIVE_ALREADY)
        size = list(struct.pack("<H", PAYLOAD_SIZE))
        session.send_ipmi_response(data=[0, 0, 0, 0, *size, *size, *struct.pack("<H", self._port), 0xFF, 0xFF])
        if not hasattr(session, "_customkeepalives"):
            # pyghmi's server session lacks what its console's error path unregisters (an
            # AttributeError there would end the BMC when a remote console vanishes): none
            session._customkeepalives = None
        activation = self.active = _Activation(self, session)
        with self._lock:
            self._buffer.clear()
        self.console.attach(self._from_guest)
        activation.sol = pyghmi_console.ServerConsole(session, activation.from_client)
        activation.sol.maxoutcount = CHUNK
        log.info("SOL activated")

    def deactivate(self, request: dict, session) -> None:
        """Deactivate Payload (netfn 6, 0x49), from any session."""
        data = request["data"]
        if len(data) < 2 or data[0] & 0x3F != PAYLOAD_SOL or data[1] != 1:
            return session.send_ipmi_response(code=CC_INVALID_DATA)
        if self.active is None:
            return session.send_ipmi_response(code=CC_ACTIVE_ALREADY)
        session.send_ipmi_response()
        log.info("SOL deactivated")
        self.end()

    def instance_info(self, request: dict, session) -> None:
        """Get Payload Instance Info (netfn 6, 0x4b): the id of the session that activated the payload (0: none),
        which a remote console polls to see that its activation still holds."""
        data = request["data"]
        if len(data) < 2 or data[0] & 0x3F != PAYLOAD_SOL or data[1] != 1:
            return session.send_ipmi_response(code=CC_INVALID_DATA)
        owner = list(self.active.session.managedsessionid) if self.active is not None else [0, 0, 0, 0]
        session.send_ipmi_response(data=[*owner, *[0] * 8])

    def end(self) -> None:
        """End the activation: the console is let go, output still buffered is dropped."""
        activation, self.active = self.active, None
        if activation is None:
            return
        if activation.sol is not None:
            activation.sol.close()
            activation.sol.awaitingack = False  # no acknowledgement of a last packet is waited for
        self.console.detach()
        with self._lock:
            self._buffer.clear()

    def pump(self) -> None:
        """Send the buffered output of the guest to the remote console, packet by packet."""
        while True:
            activation = self.active
            sol = activation.sol if activation is not None else None
            if sol is None or sol.awaitingack:
                return
            if sol.broken:
                self.end()
                return
            chunk = b""
            if not sol.pendingoutput:  # else pyghmi's own queue (what the remote console refused) first
                with self._lock:
                    chunk = bytes(self._buffer[:CHUNK])
                    del self._buffer[:CHUNK]
                if not chunk:
                    return
            sol.send_data(chunk)  # returns once acknowledged, or once pyghmi gave up (broken)

    # ------------------------------------------- guest output (libvirt's thread)
    def _from_guest(self, data: bytes) -> None:
        with self._lock:
            if self.active is None:
                return
            self._buffer += data
            del self._buffer[:-MAX_BUFFERED]
        try:
            self._waker.sendto(WAKE, self._wake_to)
        except OSError as exc:
            log.warning("cannot wake the BMC for console output: %s", exc)


def _local_address(server_socket: socket.socket) -> tuple:
    """Where this host reaches ``server_socket``: its own address, or loopback if it listens on all."""
    address = server_socket.getsockname()
    host = address[0]
    if host in ("0.0.0.0", "::"):
        host = _LOOPBACK[server_socket.family]
    return (host, *address[1:])
