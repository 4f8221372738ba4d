"""Device filters: which discovered devices a node offers, and the extra info they carry.

An entry of ``pci_information`` has a *match* part on device properties
(``PciDevice.PROPERTIES``) whose values are simplified regular expressions,
and an *extra* part: ``e.<name>`` attributes plus the standard tags
(``physical_network``, ``remote_managed``, ``trusted``). The older whitelist
form is one flat table mixing both.

Values are the simplified regular expressions of :mod:`dpustack.pci.match`
(``000[1-2]``, ``(1|3)``, ``*``), the same dialect PCI flavors use; a
missing property matches as "" (so ``*`` matches it). A plain hex number for
a hex id is zero-padded (``0xa`` matches product ``000a``). Addresses take
Nova's glob form too, and a value that can never match a real address or id
is refused (:mod:`dpustack.pci.spec_values`), as is `devname` with `address`.

Selection: the first entry that matches a device wins. As in Nova, an
entry's `address` or `devname` may name a VF's PF while its other keys match
the VF (``{address = PF, product_id = VF's}`` selects that PF's VFs); and an
entry matching a PF outright covers its VFs too. ``remote_managed=true`` is
allowed only on a VF whose card serial number is known; otherwise the device
is not offered and a warning names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from dpustack.errors import InvalidInput
from dpustack.pci.device import PROPERTIES, TAGS, TYPE_VF, PciDevice
from dpustack.pci.spec_values import compile_match_value

_BOOLEAN_TAGS = ("remote_managed", "trusted")
_EXTRA_KEY = re.compile(r"^e\.[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ALIASES = {"device_id": "product_id", "vendor": "vendor_id", "product": "product_id"}
_PLACE_KEYS = ("address", "devname")  # name where a device sits: a VF may be found through its PF's


@dataclass(frozen=True)
class DeviceSpec:
    """One filter entry: compiled match patterns and the extra info it attaches."""

    name: str                                   # where it came from, e.g. "pci.information.2"
    match: dict[str, re.Pattern[str]] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    def matches(self, device: PciDevice, parent: PciDevice | None = None) -> bool:
        """True when every pattern matches the device (a missing value is "").

        `address` and `devname` may instead match `parent`, the VF's PF, as
        long as every other pattern matches the VF itself.
        """
        place = {key: p for key, p in self.match.items() if key in _PLACE_KEYS}
        if not all(_fits(p, device, key) for key, p in self.match.items() if key not in place):
            return False
        return (all(_fits(p, device, key) for key, p in place.items())
                or (bool(place) and parent is not None and all(_fits(p, parent, key) for key, p in place.items())))


def _fits(pattern: re.Pattern[str], device: PciDevice, key: str) -> bool:
    return pattern.fullmatch(device.prop(key) or "") is not None


@dataclass(frozen=True)
class Selection:
    """The offered devices (with their extra info) and a warning for each refused one."""

    devices: list[PciDevice]
    warnings: list[str]


def compile_pattern(value: str, key: str = "", *, field: str = "value") -> re.Pattern[str]:
    """Compile a `match` value for property ``key`` as an entry would; InvalidInput names ``field``."""
    return compile_match_value(key, value, field=field)


def parse_information(entries: Any, where: str = "pci.information") -> list[DeviceSpec]:
    """Parse ``[{match = {...}, extra = {...}}, ...]``; InvalidInput names the entry and field."""
    specs = []
    for index, entry in enumerate(_list(entries, where)):
        name = f"{where}.{index}"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{name}: must be a table with 'match' and 'extra'", field=name)
        for key in entry:
            if key not in ("match", "extra"):
                raise InvalidInput(f"{name}.{key}: unknown key (an entry has 'match' and 'extra')",
                                   field=f"{name}.{key}")
        if "match" not in entry:
            raise InvalidInput(f"{name}.match: required (use match = {{}} to match every device)",
                               field=f"{name}.match")
        match = {key: _pattern(key, value, f"{name}.match.{key}")
                 for key, value in _table(entry["match"], f"{name}.match").items()}
        _one_place(match, f"{name}.match")
        extra = {key: _extra(key, value, f"{name}.extra.{key}")
                 for key, value in _table(entry.get("extra", {}), f"{name}.extra").items()}
        specs.append(DeviceSpec(name=name, match=match, extra=extra))
    return specs


def parse_whitelist(entries: Any, where: str = "pci.whitelist") -> list[DeviceSpec]:
    """Parse the older flat form, where match keys and tags share one table."""
    specs = []
    for index, entry in enumerate(_list(entries, where)):
        name = f"{where}.{index}"
        match, extra = {}, {}
        for key, value in _table(entry, name).items():
            if key in TAGS or key.startswith("e."):
                extra[key] = _extra(key, value, f"{name}.{key}")
            else:
                match[key] = _pattern(key, value, f"{name}.{key}", what="device property or tag")
        _one_place(match, name)
        specs.append(DeviceSpec(name=name, match=match, extra=extra))
    return specs


def select(devices: list[PciDevice], specs: list[DeviceSpec]) -> Selection:
    """Offer each device the first spec matches (on it or on its PF); refuse bad remote_managed tags."""
    by_address = {device.address: device for device in devices}
    offered, warnings = [], []
    for device in devices:
        parent = by_address.get(device.parent_addr or "")
        spec = next((s for s in specs if s.matches(device, parent) or (parent is not None and s.matches(parent))),
                    None)
        if spec is None:
            continue
        problem = _refusal(device, spec.extra)
        if problem:
            warnings.append(f"{device.address} is not offered ({spec.name}): {problem}")
            continue
        offered.append(replace(device, extra_info={**device.extra_info, **spec.extra}))
    return Selection(offered, warnings)


def _one_place(match: dict[str, re.Pattern[str]], where: str) -> None:
    if "devname" in match and "address" in match:  # Nova refuses this too: a netdev already names an address
        raise InvalidInput(f"{where}.devname: give devname or address, not both", field=f"{where}.devname")


def _refusal(device: PciDevice, extra: dict[str, str]) -> str:
    if extra.get("remote_managed") != "true":
        return ""
    if device.dev_type != TYPE_VF:
        return f"remote_managed=true applies to VFs only and this is a {device.dev_type}"
    if not device.card_serial_number:
        return "remote_managed=true needs a card serial number and neither the VF nor its PF has one in VPD"
    return ""


def _list(entries: Any, where: str) -> list[Any]:
    if not isinstance(entries, list):
        raise InvalidInput(f"{where}: must be a list of tables", field=where)
    return entries


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a table", field=where)
    return value


def _pattern(key: str, value: Any, where: str, *, what: str = "device property") -> re.Pattern[str]:
    if key not in PROPERTIES:
        hint = f" (did you mean {_ALIASES[key]}?)" if key in _ALIASES else ""
        raise InvalidInput(f"{where}: unknown {what}{hint}", field=where)
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: must be a string, not {value!r}", field=where)
    return compile_match_value(key, value, field=where)


def _extra(key: str, value: Any, where: str) -> str:
    if key not in TAGS and not _EXTRA_KEY.match(key):
        raise InvalidInput(f"{where}: extra keys are 'e.<name>' attributes or the tags {', '.join(TAGS)}",
                           field=where)
    if isinstance(value, bool):
        value = "true" if value else "false"
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: must be a string, not {value!r}", field=where)
    if key in _BOOLEAN_TAGS:
        if value.lower() not in ("true", "false"):
            raise InvalidInput(f"{where}: must be true or false, not {value!r}", field=where)
        value = value.lower()
    return value
