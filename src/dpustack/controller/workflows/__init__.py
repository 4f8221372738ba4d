"""Workflows of instances, ports, volumes, snapshots and images; importing this package registers them with
the orchestrator."""

from dpustack.controller.workflows import (build, devices, images, migrate, password, port_qos,  # noqa: F401
                                           power, resize, volumes)
