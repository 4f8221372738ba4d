"""Workflows of instances and ports; importing this package registers them with the orchestrator."""

from dpustack.controller.workflows import build, devices, port_qos, power  # noqa: F401
