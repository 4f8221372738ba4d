"""How a node runs its instances: power, console and room for one more, by instance uuid.

``base`` holds the interface; ``baremetal`` is the bare-metal node, where the
instance is the host itself and its BMC drives it; ``vm`` is the VM node, where
each instance is a domain of the host's hypervisor.
"""

from dpustack.agent.instance_runtime.base import InstanceFunction, InstanceRuntime
from dpustack.agent.instance_runtime.baremetal import BareMetalRuntime
from dpustack.agent.instance_runtime.vm import VmRuntime

__all__ = ["BareMetalRuntime", "InstanceFunction", "InstanceRuntime", "VmRuntime"]
