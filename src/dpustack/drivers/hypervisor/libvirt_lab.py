"""HypervisorDriver ``libvirt-lab``: the libvirtd of a lab host, whose guests cannot be given real PCI functions.

It is the ``libvirt`` driver in every respect but one, and this is the one place the lab says what stands
for a DPU function in a VM, at the guest address the function's hostdev would have
(:func:`dpustack.drivers.hypervisor.domain_xml.lab_device`):

* the net function at host BDF ``0000:{0x41+N:02x}:00.0`` (slot N) is a virtio NIC with the port's MAC on
  tap ``tap<N>`` of the host namespace, which the lab function driver (``taps = true``) wires to the
  function's host end;
* a storage function is a vhost-user-blk disk on ``<vhost_dir>/<function id>.sock``, the socket its volume
  is exported on by the DPU's storage driver.

* a PCI device of the host (a PCI flavor's GPU, or the VF of a remote-managed NIC) is a virtio RNG
  (``<rng model='virtio'>``, PCI id 1af4:1044, fed from the host's ``/dev/urandom``) in the device's guest
  slot (:func:`dpustack.drivers.hypervisor.domain_xml.lab_stand_in`): a lab host has no such device to give,
  so the guest finds a PCI device at the address the real one would have, but not its vendor and product
  ids, and a VF's stand-in carries no traffic (its port's MAC is not on it).

With ``command_dir`` each domain also gets the lab's command channel: ttyS1 on ``<command_dir>/<uuid>.sock``,
where the lab host image's agent answers (:mod:`dpustack.lab.guest_agent` talks to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from uuid import UUID

from dpustack.drivers.functions import slot_of
from dpustack.drivers.functions.lab_machine import tap_name
from dpustack.drivers.hypervisor.domain_xml import LabBacking, PassedFunction
from dpustack.drivers.hypervisor.libvirt import LibvirtHypervisorDriver, LibvirtHypervisorOptions
from dpustack.drivers.options import StatePath
from dpustack.drivers.storage import vhost_socket
from dpustack.errors import InvalidInput


class LabLibvirtHypervisorOptions(LibvirtHypervisorOptions):
    """[hypervisor.libvirt-lab]: those of ``libvirt``, the directory of the storage functions' sockets and,
    optionally, that of the domains' command channels (relative: under the agent's ``state_dir``)."""

    vhost_dir: StatePath
    command_dir: StatePath | None = None


class LabLibvirtHypervisorDriver(LibvirtHypervisorDriver):
    """A lab host's libvirtd; domains in the ``lab`` form."""

    options = LabLibvirtHypervisorOptions
    form = "lab"

    def __init__(self, *, vhost_dir: str | Path, command_dir: str | Path | None = None, **options: Any):
        super().__init__(**options)
        self.vhost_dir = Path(vhost_dir)
        self.command_dir = Path(command_dir) if command_dir is not None else None

    def lab_backing(self) -> LabBacking:
        return LabBacking(tap=_tap, socket=lambda function: vhost_socket(self.vhost_dir, function.id),
                          command_socket=_commands_in(self.command_dir) if self.command_dir is not None else None)


def _commands_in(command_dir: Path) -> Callable[[str], Path]:
    def socket_of(uuid: str) -> Path:
        command_dir.mkdir(parents=True, exist_ok=True)
        return command_socket(command_dir, uuid)
    return socket_of


def command_socket(command_dir: Path, uuid: str) -> Path:
    """The unix socket of the command channel of domain ``uuid`` (any spelling) in ``command_dir``."""
    return command_dir / f"{str(UUID(uuid))}.sock"


def _tap(function: PassedFunction) -> str:
    slot = slot_of(function.host_bdf)
    if slot is None:
        raise InvalidInput(f"functions: {function.id}'s BDF {function.host_bdf} is in no slot of the lab's DPU",
                           field="host_bdf")
    return tap_name(slot)
