"""HypervisorDriver ``libvirt-lab``: the libvirtd of a lab host, whose guests cannot be given real PCI functions.

It is the ``libvirt`` driver in every respect but one, and this is the one place the lab says what stands
for a DPU function in a VM, at the guest address the function's hostdev would have
(:func:`dpustack.drivers.hypervisor.domain_xml.lab_device`):

* the net function at host BDF ``0000:{0x41+N:02x}:00.0`` (slot N) is a virtio NIC with the port's MAC on
  tap ``tap<N>`` of the host namespace, which the lab function driver (``taps = true``) wires to the
  function's host end;
* a storage function is a vhost-user-blk disk on ``<vhost_dir>/<function id>.sock``, the socket its volume
  is exported on by the DPU's storage driver.

PCI devices other than the DPU's functions cannot stand in the lab: a domain with one is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpustack.drivers.functions import slot_of
from dpustack.drivers.functions.lab_machine import tap_name
from dpustack.drivers.hypervisor.domain_xml import LabBacking, PassedFunction
from dpustack.drivers.hypervisor.libvirt import LibvirtHypervisorDriver, LibvirtHypervisorOptions
from dpustack.drivers.options import StatePath
from dpustack.drivers.storage import vhost_socket
from dpustack.errors import InvalidInput


class LabLibvirtHypervisorOptions(LibvirtHypervisorOptions):
    """[hypervisor.libvirt-lab]: those of ``libvirt``, and the directory of the storage functions' sockets
    (relative: under the agent's ``state_dir``)."""

    vhost_dir: StatePath


class LabLibvirtHypervisorDriver(LibvirtHypervisorDriver):
    """A lab host's libvirtd; domains in the ``lab`` form."""

    options = LabLibvirtHypervisorOptions
    form = "lab"

    def __init__(self, *, vhost_dir: str | Path, **options: Any):
        super().__init__(**options)
        self.vhost_dir = Path(vhost_dir)

    def lab_backing(self) -> LabBacking:
        return LabBacking(tap=_tap, socket=lambda function: vhost_socket(self.vhost_dir, function.id))


def _tap(function: PassedFunction) -> str:
    slot = slot_of(function.host_bdf)
    if slot is None:
        raise InvalidInput(f"functions: {function.id}'s BDF {function.host_bdf} is in no slot of the lab's DPU",
                           field="host_bdf")
    return tap_name(slot)
