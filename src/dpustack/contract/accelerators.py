"""Accelerators as an agent reports them to the controller (the Cyborg model: the agent discovers, the
controller alone writes the database).

An accelerator is one device an accelerator driver found on the node: a GPU, an FPGA region, a QAT card, an
NVMe controller, the DPU's own engines, or any PCI device an ``[accelerators]`` entry selects (the generic
``pci`` driver). ``key`` names it on its node across reports and restarts; the controller gives it a uuid.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: the accelerator families, one driver each
Family = Literal["pci", "gpu", "fpga", "qat", "nvme", "dpu"]

#: where an accelerator is in its lifecycle on its node: ``inactive`` as discovered, then (once an operator set
#: it ready) ``installing`` → ``available``, or ``error`` with a fault; ``missing`` once its device is gone
AcceleratorState = Literal["inactive", "installing", "available", "uninstalling", "updating", "error", "missing"]

_NAME = r"^[A-Za-z0-9_:./@ ()+-]+$"


class AcceleratorSpecs(BaseModel):
    """The seed's ``acc_specs``: ``remote`` (0: in this host; 1: reached over the network), how many units it
    offers (``num``: VFs, mediated devices, namespaces, engines), its ``device_type`` (GPU, FPGA, CRYPTO,
    NVME, ...) and what it can do (``acc_capability``, free-form, the driver's)."""

    remote: int = Field(default=0, ge=0, le=1)
    num: int = Field(default=1, ge=0, le=4096)
    device_type: str = Field(min_length=1, max_length=32, pattern=r"^[A-Z0-9_]+$")
    acc_capability: dict[str, Any] = Field(default_factory=dict)


class DiscoveredAccelerator(BaseModel):
    """One accelerator a driver found: where (its PCI ``address``), what (ids, a readable ``name``), what it
    offers (``specs``, and for scheduling its ``resource_class`` and ``traits``)."""

    key: str = Field(min_length=1, max_length=128, description="stable on its node: '<family>:<address>' "
                                                               "(plus '/<part>' for a part of a device)")
    family: Family
    address: str = Field(min_length=1, max_length=32)
    vendor_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    product_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    name: str = Field(min_length=1, max_length=128, pattern=_NAME)
    numa_node: int | None = Field(default=None, ge=-1, le=1024)
    specs: AcceleratorSpecs
    resource_class: str = Field(min_length=1, max_length=64, pattern=r"^[A-Z0-9_]+$",
                                description="what a device profile's 'resources:<class>=N' asks: PGPU, VGPU, "
                                            "FPGA, QAT, NVME, DPU_CRYPTO, ...")
    traits: list[str] = Field(default_factory=list, max_length=64, description="e.g. CUSTOM_GPU_NVIDIA")


class ReportedAccelerator(DiscoveredAccelerator):
    """A discovered accelerator with its state on the node (the agent's cache) and, in ``error``, why."""

    state: AcceleratorState = "inactive"
    fault: str | None = Field(default=None, max_length=1024)
