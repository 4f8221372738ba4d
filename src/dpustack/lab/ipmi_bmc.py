"""An emulated IPMI BMC (pyghmi's BMC server): host power in memory, a FRU with serial and model.

    python -m dpustack.lab.ipmi_bmc --port 6230 --user admin --password-file pw [--delay 1]

It answers ``chassis power status|on|off|soft|reset|cycle``, ``mc info``,
``mc guid`` and ``fru print 0`` (chassis, board and product areas). Like a
real BMC it refuses ``reset``/``cycle`` while the host is off (0xd5), and
with ``--delay`` it applies power changes that many seconds late. It does not
offer Serial-over-LAN (activating the SOL payload is refused) and reports no
CPU or memory, as plain IPMI has no standard place for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import uuid
from pathlib import Path

import pyghmi.ipmi.bmc as bmc

log = logging.getLogger("dpustack.lab.ipmi_bmc")

NETFN_STORAGE = 0x0A
CMD_FRU_AREA_INFO = 0x10
CMD_READ_FRU_DATA = 0x11
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_NOT_PRESENT = 0xCB
CHASSIS_TYPE_RACK_MOUNT = 0x17


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


class EmulatedBmc(bmc.Bmc):
    """A host whose power lives in this process."""

    def __init__(self, authdata: dict[str, str], *, port: int, address: str, fru: bytes,
                 power: str = "off", delay: float = 0.0):
        super().__init__(authdata, port=port, address=address, bmcuuid=uuid.uuid4())
        self.powerstate = power
        self.fru = fru
        self.delay = delay
        self.mfgid = 0x0000
        self.prodid = 0x0000

    # -- chassis control ----------------------------------------------------
    def get_power_state(self) -> str:
        return self.powerstate

    def is_active(self) -> bool:
        return self.powerstate == "on"

    def power_on(self) -> None:
        self._switch("on", "power on")

    def power_off(self) -> None:
        self._switch("off", "power off")

    def power_shutdown(self) -> None:
        self._switch("off", "soft power off (ACPI shutdown)")

    def power_reset(self) -> int | None:
        return self._restart("reset")

    def power_cycle(self) -> int | None:
        return self._restart("cycle")

    def get_system_guid(self) -> uuid.UUID:
        return self.uuid

    def cold_reset(self) -> None:
        log.info("BMC cold reset requested: ignored")

    def _restart(self, how: str) -> int | None:
        if self.powerstate == "off":
            log.info("power %s refused: the host is off", how)
            return CC_NOT_IN_PRESENT_STATE
        log.info("power %s: the host restarts", how)
        return None

    def _switch(self, state: str, what: str) -> None:
        log.info("%s%s", what, f" (applied in {self.delay:g} s)" if self.delay else "")
        if self.delay:
            threading.Timer(self.delay, self._set, (state,)).start()
        else:
            self._set(state)

    def _set(self, state: str) -> None:
        self.powerstate = state
        log.info("host power is %s", state)

    # -- FRU inventory ------------------------------------------------------
    def handle_raw_request(self, request, session) -> None:
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
    parser.add_argument("--power", choices=("on", "off"), default="off", help="host power at start")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before a power change applies")
    parser.add_argument("--manufacturer", default="dpustack lab")
    parser.add_argument("--product", default="Emulated BM host")
    parser.add_argument("--serial", default="LAB-0001")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    password = args.password_file.read_text().rstrip("\n")
    fru = fru_image(manufacturer=args.manufacturer, product=args.product, serial=args.serial)
    server = EmulatedBmc({args.user: password}, port=args.port, address=args.address, fru=fru,
                         power=args.power, delay=args.delay)
    log.info("listening on %s:%d (udp), host power %s", args.address, args.port, server.powerstate)
    sys.stdout.flush()
    server.listen(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
