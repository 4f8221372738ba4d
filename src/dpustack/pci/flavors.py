"""PCI flavors: named selectors of devices, each a set of (property, simplified regex) pairs.

A request asks with flavor specs; besides what a spec says, two rules hold
that Nova applies too: a remote-managed VF (a DPU's port) goes only to a
spec that names `remote_managed`, and a PF only to a spec whose `dev_type`
admits `type-PF`. Pools are always split by both, so both may define a
flavor whatever `pci_flavor_attrs` says.
"""

from __future__ import annotations

import re
from typing import Mapping, Protocol, Sequence

from dpustack.errors import InvalidInput
from dpustack.pci.device import TYPE_PF
from dpustack.pci.match import compile_value, value_matches

ATTRS_FLAVOR_ID = "0"
ATTRS_FLAVOR_NAME = "_flavor_attrs"
DEFAULT_FLAVOR_ATTRS = ("vendor_id", "product_id", "extra_info")
# Keys that can never define a PCI flavor: they name one machine's device, not a kind of device.
LOCAL_KEYS = {"address", "host", "node", "parent_addr", "devname", "numa_node"}
# Every pool is split by these, so a flavor may always use them.
POOL_KEYS = {"dev_type", "remote_managed"}


class HasProps(Protocol):
    def prop(self, key: str) -> str | None: ...


def usable_attrs(flavor_attrs: Sequence[str]) -> set[str]:
    """`extra_info` in pci_flavor_attrs stands for every `e.*` extra and tag."""
    return {a for a in flavor_attrs if a != "extra_info"}


def attr_allowed(key: str, flavor_attrs: Sequence[str]) -> bool:
    if key in LOCAL_KEYS:
        return False
    if key in flavor_attrs or key in POOL_KEYS:
        return True
    return "extra_info" in flavor_attrs and (key.startswith("e.") or key in
                                              ("physical_network", "remote_managed", "trusted"))


def validate_spec(spec: Mapping[str, object], flavor_attrs: Sequence[str], *, field: str) -> dict[str, str]:
    """Check a flavor definition: only usable attributes, string values, valid expressions."""
    checked: dict[str, str] = {}
    for key, value in spec.items():
        where = f"{field}.{key}"
        if not attr_allowed(key, flavor_attrs):
            allowed = ", ".join(sorted(flavor_attrs)) or "none"
            raise InvalidInput(f"'{key}' cannot define a PCI flavor (usable attributes: {allowed})", field=where)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"'{key}' must be a non-empty string", field=where)
        try:
            compile_value(value, key=key)
        except re.error as exc:
            raise InvalidInput(f"'{value}' is not a valid expression: {exc}", field=where) from exc
        checked[key] = value
    return checked


def spec_matches(spec: Mapping[str, str], device: HasProps) -> bool:
    """A device matches a flavor when every pair of the flavor matches it. An empty flavor matches nothing."""
    return bool(spec) and all(value_matches(value, device.prop(key), key=key) for key, value in spec.items())


def request_accepts(spec: Mapping[str, str], device: HasProps) -> bool:
    """Whether a request's spec may take `device`: it matches, and the unstated rules allow it.

    A remote-managed VF belongs to a DPU's port: only a spec that names
    `remote_managed` gets one. A PF is never handed to a spec that does not
    ask for it with `dev_type` (PFs and VFs often share ids, and taking a PF
    takes all its VFs away).
    """
    if not spec_matches(spec, device):
        return False
    if (device.prop("remote_managed") or "").lower() == "true" and "remote_managed" not in spec:
        return False
    return device.prop("dev_type") != TYPE_PF or "dev_type" in spec
