"""The dpustack agent: runs on a DPU SoC and builds bare-metal instances through its drivers.

``config`` reads agent.toml; ``store`` keeps the desired state in SQLite;
``hardware`` loads the node's driver set; ``resources`` converges one record
with the drivers; ``steps`` runs actions as steps with undo; ``compute`` is
the bare-metal instance lifecycle and ``devices`` the direct function/switch
calls; ``inventory`` discovers, filters and pools PCI devices (with a
``[pci]`` section); ``reconciler`` and ``reporter`` run in ``periodic`` loops that
``runtime`` wires together; ``schemas``, ``routes`` and ``app`` are the HTTP
API; ``main`` is the ``dpustack-agent`` command.
"""
