"""Bytes on the controller's disk: durable file writes and the qemu-img wrapper."""
