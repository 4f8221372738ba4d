"""An emulated IPMI BMC (pyghmi's BMC server): a FRU with serial and model, and the host's power, in memory
or that of a libvirt domain, whose serial console it offers as Serial-over-LAN.

    python -m dpustack.lab.ipmi_bmc --port 6230 --user admin --password-file pw [--delay 1]
        [--libvirt-uri qemu+unix:///system?socket=… --domain host-bm-1]

It answers ``chassis power status|on|off|soft|reset|cycle``, ``mc info``,
``mc guid`` and ``fru print 0`` (chassis, board and product areas). Like a
real BMC it refuses ``reset``/``cycle`` while the host is off (0xd5), and
with ``--delay`` it applies power changes that many seconds late.

Without ``--domain`` the host's power is a value in this process (``--power``
at start; ``soft`` turns it off at once) and Serial-over-LAN is refused
(0x81, disabled). With ``--libvirt-uri`` and ``--domain`` the host is that
domain (:class:`dpustack.libvirt_host.HostMachine`): ``on`` starts it,
``off`` destroys it, ``soft`` presses its ACPI power button (the guest
decides), ``reset`` presses its reset button, ``cycle`` destroys and starts
it; and ``sol activate`` attaches to its serial console (ttyS0, see
:mod:`dpustack.lab.ipmi_sol`). Neither way reports CPU or memory: plain
IPMI has no standard place for them.

pyghmi's server speaks cipher suite 3 only (HMAC-SHA1, HMAC-SHA1-96,
AES-CBC-128) but answers any RMCP+ open-session request with those
algorithms as if it had accepted the request; :class:`Suite3Session`
refuses other algorithms (0x11) as a BMC must, so that clients that first
ask for SHA-256 (pyghmi's own) fall back to suite 3.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import uuid
from pathlib import Path

import pyghmi.ipmi.bmc as bmc
from pyghmi.ipmi.private import serversession
from pyghmi.ipmi.private import session as ipmi_session

from dpustack.errors import DriverError
from dpustack.drivers.bmc.libvirt_console import DomainConsole
from dpustack.lab.ipmi_sol import SerialOverLan
from dpustack.libvirt_host import HostMachine

log = logging.getLogger("dpustack.lab.ipmi_bmc")

NETFN_APP, CMD_GET_PAYLOAD_INSTANCE_INFO = 0x06, 0x4B
NETFN_STORAGE = 0x0A
CMD_FRU_AREA_INFO = 0x10
CMD_READ_FRU_DATA = 0x11
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_NOT_PRESENT = 0xCB
CC_SOL_DISABLED = 0x81
CC_UNSPECIFIED = 0xFF
WAIT = 30.0  # seconds the serving loop waits for a packet at most
CHASSIS_TYPE_RACK_MOUNT = 0x17
RAKP_HMAC_SHA1, HMAC_SHA1_96 = 1, 1  # cipher suite 3's authentication and integrity algorithms
RMCP_INVALID_AUTHENTICATION_ALGORITHM = 0x11


class Suite3Session(serversession.ServerSession):
    """A server session that refuses an open-session request for other algorithms than cipher suite 3's."""

    def create_open_session_response(self, request: bytes) -> bytearray:
        # request: tag, privilege, 2 reserved, the console's session id (4), then 8-byte payloads for the
        # authentication, integrity and confidentiality algorithms, each algorithm in its 5th byte
        if len(request) >= 32 and (request[12], request[20]) != (RAKP_HMAC_SHA1, HMAC_SHA1_96):
            return bytearray([request[0], RMCP_INVALID_AUTHENTICATION_ALGORITHM, 0, 0]) + request[4:8]
        return super().create_open_session_response(request)


serversession.ServerSession = Suite3Session  # what pyghmi's server makes for each new session


def fru_image(*, manufacturer: str, product: str, serial: str, part_number: str = "",
              version: str = "") -> bytes:
    """A FRU inventory (IPMI FRU Information Storage Definition v1.0): common header, chassis,
    board and product info areas, each with its zero-sum checksum."""
    chassis = _area(bytes([CHASSIS_TYPE_RACK_MOUNT]) + _field(part_number) + _field(serial))
    board = _area(bytes([0, 0, 0, 0]) + _field(manufacturer) + _field(product) + _field(serial)
                  + _field(part_number) + _field(""))
    product_area = _area(bytes([0]) + _field(manufacturer) + _field(product) + _field(part_number)
                         + _field(version) + _field(serial) + _field("") + _field(""))
    offsets = [8, 8 + len(chassis), 8 + len(chassis) + len(board)]
    header = bytearray([1, 0, *(offset // 8 for offset in offsets), 0, 0])
    header.append(-sum(header) & 0xFF)
    return bytes(header) + chassis + board + product_area


def _field(text: str) -> bytes:
    """A type/length byte (8-bit ASCII) and the text."""
    data = text.encode("latin-1")[:63]
    return bytes([0xC0 | len(data)]) + data


def _area(body: bytes) -> bytes:
    """Version, length in 8-byte units, body, end marker, padding, checksum."""
    data = bytearray([1, 0]) + body + b"\xc1"
    while (len(data) + 1) % 8:
        data.append(0)
    data[1] = (len(data) + 1) // 8
    data.append(-sum(data) & 0xFF)
    return bytes(data)


class MemoryPower:
    """Host power that is a value of this process: switched at once; a reset or cycle changes nothing."""

    def __init__(self, state: str):
        self._state = state

    def state(self) -> str:
        return self._state

    def apply(self, action: str) -> str | None:
        """Carry out ``action`` (on, off, soft, reset, cycle); what the log says then."""
        if action in ("on", "off", "soft"):
            self._state = "on" if action == "on" else "off"
            return f"host power is {self._state}"
        return None


class DomainPower:
    """The power of a libvirt domain; DriverError when libvirt refuses or cannot be reached."""

    def __init__(self, machine: HostMachine):
        self.machine = machine

    def state(self) -> str:
        return self.machine.state()

    def apply(self, action: str) -> str | None:
        """Carry out ``action`` (on, off, soft, reset, cycle); what the log says then."""
        if action == "soft":
            self.machine.shutdown()
            return "ACPI power button pressed: the guest decides"
        if action == "reset":
            self.machine.reset()
            return None
        if action in ("off", "cycle"):
            self.machine.destroy()
        if action in ("on", "cycle"):
            self.machine.start()
        return f"host power is {self.machine.state()}" if action != "cycle" else None


class EmulatedBmc(bmc.Bmc):
    """A BMC of a host whose power is ``power`` (:class:`MemoryPower` or :class:`DomainPower`), with
    Serial-over-LAN on ``console`` if there is one."""

    def __init__(self, authdata: dict[str, str], *, port: int, address: str, fru: bytes,
                 power: MemoryPower | DomainPower, delay: float = 0.0, console: DomainConsole | None = None):
        super().__init__(authdata, port=port, address=address, bmcuuid=uuid.uuid4())
        self.power = power
        self.fru = fru
        self.delay = delay
        self.serial = SerialOverLan(console, self.serversocket) if console is not None else None
        self.mfgid = 0x0000
        self.prodid = 0x0000

    def serve(self) -> None:
        """Answer requests for ever (in this thread), with the console's output in between."""
        while True:
            ipmi_session.Session.wait_for_rsp(timeout=WAIT)
            if self.serial is not None:
                self.serial.pump()

    # -- chassis control ----------------------------------------------------
    def get_chassis_status(self, session) -> None:
        try:
            state = self.power.state()
        except DriverError as exc:
            log.error("cannot read the host's power: %s", exc.message)
            return session.send_ipmi_response(code=CC_UNSPECIFIED)
        session.send_ipmi_response(data=[1 if state == "on" else 0, 0, 0])

    def power_on(self) -> int | None:
        return self._switch("on", "power on")

    def power_off(self) -> int | None:
        return self._switch("off", "power off")

    def power_shutdown(self) -> int | None:
        return self._switch("soft", "soft power off (ACPI shutdown)")

    def power_reset(self) -> int | None:
        return self._restart("reset")

    def power_cycle(self) -> int | None:
        return self._restart("cycle")

    def get_system_guid(self) -> uuid.UUID:
        return self.uuid

    def cold_reset(self) -> None:
        log.info("BMC cold reset requested: ignored")

    def _restart(self, how: str) -> int | None:
        try:
            off = self.power.state() == "off"
        except DriverError as exc:
            log.error("power %s failed: %s", how, exc.message)
            return CC_UNSPECIFIED
        if off:
            log.info("power %s refused: the host is off", how)
            return CC_NOT_IN_PRESENT_STATE
        return self._switch(how, f"power {how}: the host restarts")

    def _switch(self, action: str, what: str) -> int | None:
        log.info("%s%s", what, f" (applied in {self.delay:g} s)" if self.delay else "")
        if self.delay:
            threading.Timer(self.delay, self._apply, (action,)).start()
            return None
        return self._apply(action)

    def _apply(self, action: str) -> int | None:
        try:
            said = self.power.apply(action)
        except DriverError as exc:
            log.error("%s failed: %s", action, exc.message)
            return CC_UNSPECIFIED
        if said:
            log.info("%s", said)
        return None

    # -- Serial-over-LAN ----------------------------------------------------
    def activate_payload(self, request, session) -> None:
        if self.serial is None:
            return session.send_ipmi_response(code=CC_SOL_DISABLED)
        self.serial.activate(request, session)

    def deactivate_payload(self, request, session) -> None:
        if self.serial is None:
            return session.send_ipmi_response(code=CC_SOL_DISABLED)
        self.serial.deactivate(request, session)

    # -- FRU inventory ------------------------------------------------------
    def handle_raw_request(self, request, session) -> None:
        if (request["netfn"], request["command"]) == (NETFN_APP, CMD_GET_PAYLOAD_INSTANCE_INFO):
            if self.serial is None:
                return session.send_ipmi_response(code=CC_SOL_DISABLED)
            return self.serial.instance_info(request, session)
        if request["netfn"] == NETFN_STORAGE and request["command"] in (CMD_FRU_AREA_INFO, CMD_READ_FRU_DATA):
            return self._fru_request(request, session)
        return super().handle_raw_request(request, session)

    def _fru_request(self, request, session) -> None:
        data = request["data"]
        if not data or data[0] != 0:
            return session.send_ipmi_response(code=CC_NOT_PRESENT)
        if request["command"] == CMD_FRU_AREA_INFO:
            size = len(self.fru)
            return session.send_ipmi_response(data=[size & 0xFF, size >> 8, 0])
        offset, count = data[1] | data[2] << 8, data[3]
        chunk = self.fru[offset:offset + count]
        return session.send_ipmi_response(data=[len(chunk), *chunk])



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpustack.lab.ipmi_bmc", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="UDP port to answer on")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True, help="file holding the password")
    parser.add_argument("--power", choices=("on", "off"), help="host power at start, without --domain (off)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before a power change applies")
    parser.add_argument("--manufacturer", default="dpustack lab")
    parser.add_argument("--product", default="Emulated BM host")
    parser.add_argument("--serial", default="LAB-0001")
    parser.add_argument("--libvirt-uri", help="the libvirtd of the host's domain (with --domain)")
    parser.add_argument("--domain", help="the host: a libvirt domain (with --libvirt-uri)")
    args = parser.parse_args(argv)
    if (args.libvirt_uri is None) != (args.domain is None):
        parser.error("--libvirt-uri and --domain go together")
    if args.domain is not None and args.power is not None:
        parser.error("--power is for a host without --domain; a domain's power is its own")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    password = args.password_file.read_text().rstrip("\n")
    fru = fru_image(manufacturer=args.manufacturer, product=args.product, serial=args.serial)
    console = None
    if args.domain is None:
        power: MemoryPower | DomainPower = MemoryPower(args.power or "off")
    else:
        console = DomainConsole(args.libvirt_uri, args.domain)  # first: it starts libvirt's event loop
        power = DomainPower(HostMachine(args.libvirt_uri, args.domain))
        try:
            power.state()
        except DriverError as exc:
            log.error("no host: %s", exc.message)
            return 2
    server = EmulatedBmc({args.user: password}, port=args.port, address=args.address, fru=fru, power=power,
                         delay=args.delay, console=console)
    host = f"domain '{args.domain}'" if args.domain else "host"
    log.info("listening on %s:%d (udp), %s power %s", args.address, args.port, host, power.state())
    sys.stdout.flush()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
