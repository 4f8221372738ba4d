"""Instance workflows; importing this package registers them with the orchestrator."""

from dpustack.controller.workflows import build, devices, power  # noqa: F401
