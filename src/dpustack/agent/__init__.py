"""The dpustack agent: runs on a DPU SoC, builds bare-metal instances through its drivers.

Modules: ``config`` (agent.toml), ``store`` (local desired state),
``hardware`` (the node's driver set), ``resources`` (converge one record),
``steps`` (step runner with undo), ``compute`` (instance lifecycle),
``devices`` (direct function/switch calls), ``reconciler``, ``reporter``,
``runtime`` (wiring and background loops), ``app`` and ``routes`` (HTTP),
``main`` (the ``dpustack-agent`` command).
"""
