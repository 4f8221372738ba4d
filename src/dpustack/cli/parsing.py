"""Structured option values: `KEY=VALUE` pairs (`--set`, `--property`) and `--nic` descriptions.

Values pass through untouched: a PCI flavor spec such as `000[1-2]` or
`1:IntelGPU,NvGPU;1:QA1` reaches the API exactly as typed.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from dpustack.cli.context import CliUsageError


class VnicType(str, Enum):
    """How a port is bound (docs/api.md: Port `vnic_type`)."""

    normal = "normal"
    direct = "direct"
    remote_managed = "remote-managed"


# `--nic` keys (the OpenStack client's spelling) → InstanceCreate NicRequest fields.
NIC_KEYS = {"net-id": "network", "port-id": "port", "pci-flavor": "pci_flavor", "vnic-type": "vnic_type",
            "security-group": "security_groups"}
# Keys that may repeat, each time adding one item to a list.
NIC_LIST_KEYS = {"security-group"}


def key_value(text: str, option: str) -> tuple[str, str]:
    """Split `KEY=VALUE` on the first `=` only; the key may contain `:`, the value anything."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CliUsageError(f"{option} expects KEY=VALUE, got '{text}'")
    return key, value


def key_values(texts: list[str], option: str) -> dict[str, str]:
    """Several `KEY=VALUE` options as one dict; a key given twice is an error, not a silent overwrite."""
    pairs: dict[str, str] = {}
    for text in texts:
        key, value = key_value(text, option)
        if key in pairs:
            raise CliUsageError(f"{option}: key '{key}' given twice")
        pairs[key] = value
    return pairs


def nic(text: str) -> dict[str, Any]:
    """One `--nic net-id=NET[,pci-flavor=1:A,B][,vnic-type=T][,security-group=SG...]` as an InstanceCreate NIC.

    A comma-separated part without `=` continues the previous value, so a PCI
    flavor list (`pci-flavor=1:IntelGPU,NvGPU`) keeps its commas.
    `security-group` may repeat: each names one group of the new port.
    """
    given: dict[str, str] = {}
    groups: list[str] = []
    last: str | None = None
    for part in text.split(","):
        if "=" not in part:
            if last is None or not part:
                raise CliUsageError(f"--nic '{text}': expected KEY=VALUE, got '{part}'")
            if last in NIC_LIST_KEYS:
                raise CliUsageError(f"--nic '{text}': expected KEY=VALUE, got '{part}' "
                                    f"(repeat the key for each group: {last}=A,{last}=B)")
            given[last] += "," + part
            continue
        key, value = key_value(part, "--nic")
        if key not in NIC_KEYS:
            raise CliUsageError(f"--nic '{text}': unknown key '{key}' (known: {', '.join(NIC_KEYS)})")
        last = key
        if key in NIC_LIST_KEYS:
            if not value:
                raise CliUsageError(f"--nic '{text}': {key}= needs a value")
            groups.append(value)
            continue
        if key in given:
            raise CliUsageError(f"--nic '{text}': key '{key}' given twice")
        given[key] = value
    if ("net-id" in given) == ("port-id" in given):
        raise CliUsageError(f"--nic '{text}': give exactly one of net-id=NETWORK or port-id=PORT")
    if groups and "port-id" in given:
        raise CliUsageError(f"--nic '{text}': security-group goes with net-id; "
                            "an existing port keeps its own groups (change them with `port set`)")
    vnic_type = given.get("vnic-type")
    if vnic_type is not None and vnic_type not in {t.value for t in VnicType}:
        raise CliUsageError(f"--nic '{text}': unknown vnic-type '{vnic_type}' "
                            f"(known: {', '.join(t.value for t in VnicType)})")
    request: dict[str, Any] = {NIC_KEYS[key]: value for key, value in given.items()}
    if groups:
        request["security_groups"] = groups
    return request
