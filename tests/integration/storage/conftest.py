"""A real storage node per test: a qemu-storage-daemon in a short temporary directory, and the qcow2
volume backend driving it over QMP, with its NBD server on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpustack.controller.storage.qsd_node import StorageNode
from dpustack.controller.volumebackend import Qcow2VolumeBackend
from storage_node import StorageDaemon, short_directory


@dataclass
class Storage:
    daemon: StorageDaemon
    backend: Qcow2VolumeBackend
    images: Path


@pytest.fixture
def storage(free_port) -> Iterator[Storage]:
    directory = short_directory()
    daemon = StorageDaemon(directory)
    node = StorageNode(daemon.qmp_socket, "127.0.0.1", free_port())
    images = directory / "images"
    images.mkdir()
    try:
        daemon.start()
        yield Storage(daemon, Qcow2VolumeBackend(images, directory / "pool", node), images)
    finally:
        node.close()
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
