"""Workflows of instances, ports, volumes and snapshots; importing this package registers them with the orchestrator."""

from dpustack.controller.workflows import build, devices, port_qos, power, volumes  # noqa: F401
