"""The steps that give an instance its NICs and volumes and take them away again, each with its undo.

A NIC is a net function whose representor is plugged into the bridge (a VM's
remote-managed NIC: the host VF the controller allocated, whose representor on
this node's DPU is plugged instead); a volume is a storage function with the
volume attached. Function ids are
derived from the port or volume they serve (``net-<port>``,
``storage-<volume>``), so a repeated call finds its own work.
"""

from __future__ import annotations

from typing import Callable

from dpustack.agent.instance_runtime import InstanceFunction
from dpustack.agent.metadata_proxy import MetadataProxies
from dpustack.agent.steps import Step
from dpustack.agent.store import PRESENT, AgentStore, FunctionRecord, PortBinding, VolumeBinding
from dpustack.agent.wiring import Wiring
from dpustack.contract.instances import NicVf
from dpustack.drivers.functions import FunctionKind
from dpustack.errors import Conflict

#: the representor netdev of a host VF on this node's DPU, by (the host PF's MAC, the VF's number)
RepresentorLookup = Callable[[str, int], str]


def net_function_id(port_id: str) -> str:
    return f"net-{port_id}"


def storage_function_id(volume_id: str) -> str:
    return f"storage-{volume_id}"


def metadata_networks(store: AgentStore) -> set[str]:
    """The networks this node has a port on: it serves metadata on each."""
    return {b.network_id for b in store.find(PortBinding, desired=PRESENT) if b.network_id}


def instance_function(store: AgentStore, record: FunctionRecord) -> InstanceFunction:
    """A recorded function as the instance's runtime is given it."""
    volume = store.get(VolumeBinding, record.volume_id) if record.volume_id else None
    kind: FunctionKind = "storage" if record.kind == "storage" else "net"
    return InstanceFunction(id=record.id, kind=kind, bdf=record.bdf or "", mac=record.mac,
                            bootable=bool(volume and volume.bootable))


def instance_functions(store: AgentStore, uuid: str) -> list[InstanceFunction]:
    """The instance's functions as its runtime is given them at define: volumes first (boot volumes first, then
    in the order attached), then NICs in the order plugged."""
    functions = [instance_function(store, record)
                 for record in store.find(FunctionRecord, instance_uuid=uuid, desired=PRESENT)]
    return sorted(functions, key=lambda f: (f.kind != "storage", not f.bootable))


class InstanceSteps:
    """Builds the NIC and volume steps of the instances on one node (NICs plugged into ``bridge``)."""

    def __init__(self, store: AgentStore, wiring: Wiring, *, bridge: str, metadata: MetadataProxies | None = None,
                 representor: RepresentorLookup | None = None):
        self._store = store
        self._wiring = wiring
        self._bridge = bridge
        self._metadata = metadata
        self._representor = representor

    def add_nic(self, uuid: str, port_id: str, mac: str, network_id: str | None = None,
                qos_pps: int | None = None, bdf: str | None = None) -> list[Step]:
        """Create the net function (at host address ``bdf`` if given and free) and plug its representor
        (limited to ``qos_pps`` packets/s, if given); with a metadata proxy, serve metadata on the port's
        network."""
        function_id = net_function_id(port_id)

        def create() -> None:
            record = self._store.get(FunctionRecord, function_id) or self._wiring.new_function(
                function_id, kind="net", mac=mac, instance_uuid=uuid, port_id=port_id, bdf=bdf)
            self._wiring.ensure_function(record)

        def plug() -> None:
            function = self._store.get(FunctionRecord, function_id)
            assert function is not None and function.representor, "the create step records the representor"
            self._wiring.ensure_port(PortBinding(
                port_id=port_id, bridge=self._bridge, port_name=function.representor, function_id=function_id,
                mac=function.mac, instance_uuid=uuid, network_id=network_id, qos_pps=qos_pps))

        steps = [Step(f"create net function {function_id}", create,
                      lambda: self._wiring.remove_function(function_id)),
                 Step(f"plug port {port_id} into {self._bridge}", plug,
                      lambda: self._wiring.remove_port(port_id))]
        return steps + self._metadata_steps(network_id)

    def add_vf_nic(self, uuid: str, port_id: str, mac: str, vf: NicVf, network_id: str | None = None,
                   qos_pps: int | None = None) -> list[Step]:
        """Plug the representor of the host VF ``vf`` (found on this node's DPU by its PF's MAC and VF number)
        as the port; no function is made, the VF is the NIC. With a metadata proxy, serve metadata as for
        any NIC."""
        lookup = self._representor

        def plug() -> None:
            if lookup is None:
                raise Conflict(f"the representor of VF {vf.address} cannot be found: the inventory role is off "
                               "(agent.toml has no [pci] section)", field="vf")
            self._wiring.ensure_port(PortBinding(
                port_id=port_id, bridge=self._bridge, port_name=lookup(vf.pf_mac, vf.vf_num), mac=mac,
                instance_uuid=uuid, network_id=network_id, qos_pps=qos_pps))

        steps = [Step(f"plug port {port_id} into {self._bridge} at the representor of VF {vf.address}", plug,
                      lambda: self._wiring.remove_port(port_id))]
        return steps + self._metadata_steps(network_id)

    def _metadata_steps(self, network_id: str | None) -> list[Step]:
        if self._metadata is None or not network_id:
            return []
        metadata = self._metadata
        return [Step(f"serve metadata on network {network_id}", lambda: metadata.ensure(network_id),
                     lambda: metadata.sync(metadata_networks(self._store)))]

    def add_volume(self, uuid: str, volume_id: str, uri: str, bootable: bool, bdf: str | None = None) -> list[Step]:
        """Attach the volume to the storage function's back end, then create the function (at host address
        ``bdf`` if given and free): the host never sees a disk with nothing behind it."""
        function_id = storage_function_id(volume_id)

        def create() -> None:
            record = self._store.get(FunctionRecord, function_id) or self._wiring.new_function(
                function_id, kind="storage", instance_uuid=uuid, volume_id=volume_id, bdf=bdf)
            self._wiring.ensure_function(record)

        def attach() -> None:
            self._wiring.ensure_attachment(VolumeBinding(
                volume_id=volume_id, function_id=function_id, uri=uri, bootable=bootable, instance_uuid=uuid))

        return [Step(f"attach volume {volume_id}", attach,
                     lambda: self._wiring.remove_attachment(volume_id)),
                Step(f"create storage function {function_id}", create,
                     lambda: self._wiring.remove_function(function_id))]

    def unplug(self, binding: PortBinding) -> Step:
        return Step(f"unplug port {binding.port_id} from {binding.bridge}",
                    lambda: self._wiring.remove_port(binding.port_id),
                    lambda: self._wiring.ensure_port(binding))

    def detach(self, binding: VolumeBinding) -> Step:
        return Step(f"detach volume {binding.volume_id}",
                    lambda: self._wiring.remove_attachment(binding.volume_id),
                    lambda: self._wiring.ensure_attachment(binding))

    def delete_function(self, function: FunctionRecord) -> Step:
        return Step(f"delete {function.kind} function {function.id}",
                    lambda: self._wiring.remove_function(function.id),
                    lambda: self._wiring.ensure_function(function))
