"""Workflows of instances, ports, volumes, snapshots and images; importing this package registers them with
the orchestrator."""

from dpustack.controller.workflows import (build, devices, images, password, port_qos, power,  # noqa: F401
                                           resize, volumes)
