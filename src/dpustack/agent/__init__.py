"""The dpustack agent: runs on a DPU SoC and builds instances on its node through its drivers.

``config`` reads agent.toml; ``store`` keeps the desired state in SQLite;
``hardware`` loads the node's driver set; ``wiring`` records, then wires, host
functions, switch ports and volume attachments; ``steps`` runs actions as
steps with undo; ``compute`` is the instance lifecycle, with the NIC and volume
steps of ``instance_steps`` and the power and console of an
``instance_runtime`` (bare metal: the host through its BMC);
``standalone_devices`` are the direct function/switch calls; ``inventory``
discovers, filters and pools PCI devices (with a ``[pci]`` section);
``metadata_proxy`` serves 169.254.169.254; ``reconciler`` and ``reporter`` run
in ``periodic`` loops that ``service`` puts together; ``schemas``, ``routes``
and ``app`` are the HTTP API; ``main`` is the ``dpustack-agent`` command.
"""
