"""Workflows of instances, ports, volumes, snapshots and images; importing this package registers them with
the orchestrator."""

from dpustack.controller.workflows import (build, devices, images, live_migrate, migrate, password,  # noqa: F401
                                           port_qos, power, resize, volumes)
