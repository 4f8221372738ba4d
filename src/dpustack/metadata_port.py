"""How an instance reaches the metadata service; shared by the controller and the agents.

Every network has one OVN *localport* (``dpustack-metadata-<network id>``,
address ``169.254.169.254`` with a MAC derived from the network id). A
localport exists on every chassis at once and only talks to the ports of its
own chassis, so each DPU agent plugs its own copy into ``br-int`` and answers
there for the instances it hosts. DHCP gives instances an on-link route to
169.254.169.254, so they reach it directly, without a router.
"""

from __future__ import annotations

import hashlib

METADATA_IP = "169.254.169.254"
METADATA_PORT = 80
#: Header with which an agent's proxy tells the controller which network a request came from.
NETWORK_HEADER = "X-Dpustack-Network-Id"


def port_name(network_id: str) -> str:
    """The logical switch port (and OVS ``external_ids:iface-id``) of the network's metadata localport."""
    return f"dpustack-metadata-{network_id}"


def port_mac(network_id: str) -> str:
    """The localport's MAC: locally administered, outside the ``fa:16:3e`` range ports are given."""
    digest = hashlib.sha256(network_id.encode()).digest()
    return "fa:17:3e:" + ":".join(f"{byte:02x}" for byte in digest[:3])
