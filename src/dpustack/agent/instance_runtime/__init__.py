"""How a node runs its instances: power, console and room for one more, by instance uuid.

``base`` holds the interface; ``baremetal`` is the bare-metal node, where the
instance is the host itself and its BMC drives it.
"""

from dpustack.agent.instance_runtime.base import InstanceRuntime
from dpustack.agent.instance_runtime.baremetal import BareMetalRuntime

__all__ = ["BareMetalRuntime", "InstanceRuntime"]
