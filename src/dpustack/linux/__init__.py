"""Linux host utilities shared by the drivers, the agent and the lab (network namespaces)."""
