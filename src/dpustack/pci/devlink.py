"""``devlink -j port show`` output: port flavours, PF/VF logical numbers, representors.

On a DPU, every host-visible function has a NIC-switch port: flavour
``pcipf`` (with ``pfnum``) for a host PF and ``pcivf`` (``pfnum`` and
``vfnum``) for a host VF; their netdevs are the representors (``pf0hpf``,
``pf0vf3``). ``function.hw_addr`` of a ``pcipf`` port is the MAC the host
sees on that PF, which is how a (PF MAC, VF number) pair from the host side
names one representor on the DPU side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dpustack.errors import InvalidInput, NotFound

FLAVOURS = ("physical", "virtual", "pcipf", "pcivf", "pcisf", "cpu", "dsa", "unused")

# devlink JSON key -> (DevlinkPort attribute, type); every external name appears here once.
_FIELDS: dict[str, tuple[str, type]] = {
    "type": ("type", str),
    "netdev": ("netdev", str),
    "flavour": ("flavour", str),
    "port": ("number", int),
    "controller": ("controller", int),
    "pfnum": ("pfnum", int),
    "vfnum": ("vfnum", int),
    "external": ("external", bool),
}


@dataclass(frozen=True)
class DevlinkPort:
    """One devlink port, e.g. ``pci/0000:03:00.0/196609`` (flavour pcivf, pfnum 0, vfnum 0)."""

    handle: str                    # "pci/0000:03:00.0/196609"
    flavour: str
    type: str = ""
    netdev: str = ""
    number: int | None = None      # "port" of physical/virtual ports (driver-specific)
    controller: int | None = None
    pfnum: int | None = None
    vfnum: int | None = None
    external: bool = False
    hw_addr: str = ""              # function.hw_addr, lower case

    @property
    def device(self) -> str:
        """The devlink device (one NIC switch), e.g. ``pci/0000:03:00.0``."""
        return self.handle.rsplit("/", 1)[0]


def parse_ports(text: str | bytes | dict[str, Any]) -> list[DevlinkPort]:
    """Parse ``devlink -j port show`` (text or decoded JSON); InvalidInput names the bad field."""
    data = text if isinstance(text, dict) else _decode(text)
    ports = data.get("port") if isinstance(data, dict) else None
    if not isinstance(ports, dict):
        raise InvalidInput("devlink: expected an object with a 'port' object", field="port")
    return [_port(handle, attrs) for handle, attrs in ports.items()]


def _decode(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"devlink: output is not JSON: {exc}", field="port") from exc


def _port(handle: str, attrs: Any) -> DevlinkPort:
    where = f"port.{handle}"
    if handle.count("/") < 2 or not isinstance(attrs, dict):
        raise InvalidInput(f"devlink: {where}: expected 'bus/device/index' with an object", field=where)
    values: dict[str, Any] = {}
    for key, (name, kind) in _FIELDS.items():
        if key in attrs:
            value = attrs[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InvalidInput(f"devlink: {where}.{key}: expected {kind.__name__}, got {value!r}",
                                   field=f"{where}.{key}")
            values[name] = value
    if values.get("flavour") not in FLAVOURS:
        raise InvalidInput(f"devlink: {where}.flavour: {values.get('flavour')!r} is not one of "
                           f"{', '.join(FLAVOURS)}", field=f"{where}.flavour")
    function = attrs.get("function", {})
    hw_addr = function.get("hw_addr", "") if isinstance(function, dict) else ""
    if not isinstance(hw_addr, str):
        raise InvalidInput(f"devlink: {where}.function.hw_addr: expected str", field=f"{where}.function.hw_addr")
    return DevlinkPort(handle=handle, hw_addr=hw_addr.lower(), **values)


def normalize_mac(mac: str, *, field: str = "mac") -> str:
    """``aa:bb:..`` or ``AA-BB-..`` -> ``aa:bb:..``; InvalidInput otherwise."""
    parts = mac.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise InvalidInput(f"{field}: {mac!r} is not a MAC address", field=field)
    return ":".join(parts)


def find_representor(ports: list[DevlinkPort], pf_mac: str, vf_num: int) -> DevlinkPort:
    """The ``pcivf`` port of VF ``vf_num`` under the host PF whose MAC is ``pf_mac``.

    The ``pcipf`` port whose function hw_addr is the PF MAC gives the NIC
    switch and the pfnum; the representor is the ``pcivf`` port of that
    switch (and controller) with that pfnum and vfnum.
    """
    mac = normalize_mac(pf_mac, field="pf_mac")
    pf = next((p for p in ports if p.flavour == "pcipf" and p.hw_addr == mac), None)
    if pf is None:
        raise NotFound(f"no pcipf port has function hw_addr {mac}", field="pf_mac")
    for port in ports:
        if (port.flavour == "pcivf" and port.device == pf.device and port.controller == pf.controller
                and port.pfnum == pf.pfnum and port.vfnum == vf_num):
            return port
    raise NotFound(f"pf{pf.pfnum} ({pf.handle}) has no pcivf port with vfnum {vf_num}", field="vf_num")
