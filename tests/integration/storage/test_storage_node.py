"""The controller's connection to the storage node's daemon: without a daemon nothing is live and the
pool's offline work goes on; a daemon that cannot serve NBD says why."""

from __future__ import annotations

import socket

import pytest

from dpustack.controller.storage.qsd_node import Refused, StorageNode, Unreachable
from dpustack.controller.volumebackend import Qcow2VolumeBackend
from storage_node import qemu_io


def test_without_a_daemon_volumes_are_offline_and_only_exporting_needs_one(storage):
    backend = storage.backend
    storage.daemon.stop()
    with pytest.raises(Unreachable) as caught:
        backend.node.nodes()
    assert str(storage.daemon.qmp_socket) in caught.value.message
    backend.create("v1", 1)
    backend.snapshot("v1", "s1")
    backend.extend("v1", 2)
    backend.create("r1", 2, snapshot_id="s1")
    backend.flatten("r1")
    backend.unexport("a1")  # nothing is served without a daemon
    with pytest.raises(Unreachable):
        backend.export("v1", "a1")
    storage.daemon.start()
    uri = backend.export("v1", "a1")
    assert qemu_io(uri, "length").strip() == "2 GiB"
    backend.unexport("a1")
    assert backend.pool.read("v1").snapshots == {"s1": 0} and backend.pool.read("r1").base is None


def test_a_daemon_that_cannot_listen_on_the_nbd_address_is_refused_naming_it(storage):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = StorageNode(storage.daemon.qmp_socket, "127.0.0.1", port)
        storage.backend.node.disconnect()  # one monitor client at a time
        try:
            backend = Qcow2VolumeBackend(storage.images, storage.backend.pool.root, node)
            backend.create("v1", 1)
            with pytest.raises(Refused) as caught:
                backend.export("v1", "a1")
            assert f"127.0.0.1:{port}" in caught.value.message
        finally:
            node.close()
