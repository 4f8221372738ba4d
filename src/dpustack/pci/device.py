"""PciDevice: everything dpustack knows about one PCI function."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TYPE_PF, TYPE_VF, TYPE_PCI = "type-PF", "type-VF", "type-PCI"
DEVICE_TYPES = (TYPE_PF, TYPE_VF, TYPE_PCI)

# Device properties a filter or a PCI flavor may match on (besides `e.*` extras and tags).
PROPERTIES = ("address", "vendor_id", "product_id", "class_code", "subsystem_vendor_id",
              "subsystem_device_id", "dev_type", "numa_node", "driver", "devname", "parent_addr",
              "card_serial_number")
TAGS = ("physical_network", "remote_managed", "trusted")


@dataclass
class PciDevice:
    """One discovered function. IDs are 4-digit lower-case hex without `0x`."""

    address: str                      # canonical "dddd:bb:ss.f" (domain may be wider: "10000:00:01.0")
    vendor_id: str
    product_id: str
    dev_type: str = TYPE_PCI          # type-PF (has SR-IOV VFs or could), type-VF, type-PCI
    class_code: str = ""              # 6 hex digits, e.g. "020000"
    subsystem_vendor_id: str = ""
    subsystem_device_id: str = ""
    numa_node: int | None = None
    driver: str = ""
    parent_addr: str | None = None    # the PF of a VF
    vf_num: int | None = None         # a VF's logical number under its PF (virtfn<N>)
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    sriov_vf_device: str | None = None
    devname: str = ""                 # netdev name, if any
    mac: str = ""                     # netdev MAC, if any
    pf_mac: str = ""                  # for a VF: its PF's MAC
    card_serial_number: str = ""      # from VPD (a VF without VPD takes its PF's)
    vpd_error: str = ""               # why the VPD could not be read, if it could not
    extra_info: dict[str, str] = field(default_factory=dict)  # `e.*` extras and tags, string values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PciDevice":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def tags(self) -> dict[str, str]:
        """`extra_info` with the defaults that count as given: a VF or PF that does not say is not remote-managed.

        Nova gives network functions the same default, so a request or a pool
        for `remote_managed=false` takes untagged VFs.
        """
        if self.dev_type in (TYPE_VF, TYPE_PF) and "remote_managed" not in self.extra_info:
            return {**self.extra_info, "remote_managed": "false"}
        return self.extra_info

    def prop(self, key: str) -> str | None:
        """The value of a property, extra or tag by the name a filter or flavor uses."""
        tags = self.tags()
        if key in tags:
            return tags[key]
        if key in PROPERTIES:
            value = getattr(self, key)
            return None if value is None else str(value)
        return None

    @property
    def remote_managed(self) -> bool:
        return self.extra_info.get("remote_managed", "false").lower() == "true"
