"""kill -9 of the controller in the middle of storage work leaves the old state or the new one.

The create or snapshot runs in a child process (the controller), which SIGKILLs itself at a chosen
point; the test then looks at the pool and the daemon, and calls again, as a resumed workflow would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dpustack.controller.volumebackend import ImageSource
from dpustack.errors import NotFound
from storage_node import NbdClient, qemu_io

MiB = 1 << 20

# The controller, killed at one point: argv = images, pool, QMP socket, NBD port, point, call.
CONTROLLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from dpustack.controller.storage import files, pool
    from dpustack.controller.storage.qsd_node import StorageNode
    from dpustack.controller.volumebackend import ImageSource, Qcow2VolumeBackend

    images, pool_dir, qmp, port, point, call = sys.argv[1:]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    publish, write, snapshot, execute = files.publish, pool.VolumePool.write, StorageNode.snapshot, StorageNode.execute

    def killing_publish(partial, final):
        if point == "layer" and final.suffix == ".qcow2":
            die()
        publish(partial, final)

    def killing_write(self, volume_id, index):
        if point == "index" or (point == "switched" and index.pending is None):
            die()
        write(self, volume_id, index)

    def killing_snapshot(self, *args):
        if point == "before switch":
            die()
        snapshot(self, *args)

    def killing_execute(self, command, arguments=None):
        if point == "overlay opened" and command == "blockdev-snapshot":
            die()
        return execute(self, command, arguments)

    files.publish, pool.VolumePool.write, StorageNode.snapshot = killing_publish, killing_write, killing_snapshot
    StorageNode.execute = killing_execute
    backend = Qcow2VolumeBackend(Path(images), Path(pool_dir), StorageNode(Path(qmp), "127.0.0.1", int(port)))
    if call == "create":
        backend.create("v1", 1, ImageSource("img", "raw"))
    else:
        backend.snapshot("v1", "s1")
    sys.exit("not killed")
""")


def _killed_controller(storage, point: str, call: str) -> None:
    backend = storage.backend
    backend.node.disconnect()  # the daemon's monitor serves one client at a time
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", CONTROLLER, str(storage.images), str(backend.pool.root),
                           str(storage.daemon.qmp_socket), str(backend.node.nbd_port), point, call],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.parametrize("point", ["layer", "index"], ids=["before-the-layer-is-named", "before-the-index"])
def test_a_create_killed_midway_leaves_no_volume_and_creating_again_completes_it(storage, point):
    (storage.images / "img").write_bytes(b"\x11" * MiB)
    _killed_controller(storage, point, "create")
    backend = storage.backend
    assert backend.pool.read("v1") is None  # no volume, so nothing can be marked available on it
    with pytest.raises(NotFound):
        backend.export("v1", "a1")
    backend.create("v1", 1, ImageSource("img", "raw"))
    assert sorted(p.name for p in backend.pool.directory("v1").iterdir()) == ["0.qcow2", "index.json"]
    qemu_io(backend.export("v1", "a1"), "read -P 0x11 0 1M")
    backend.unexport("a1")


@pytest.mark.parametrize("point", ["before switch", "overlay opened", "switched"])
def test_a_live_snapshot_killed_midway_is_settled_from_what_the_daemon_serves(storage, point):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    qemu_io(uri, "write -P 0xaa 0 64k", "flush")
    _killed_controller(storage, point, "snapshot")
    assert backend.pool.read("v1").pending is not None  # the interrupted call left its intent
    assert backend.pool.layer("v1", 1).exists()  # and the new layer's file, complete
    with NbdClient(uri) as dpu:  # the export never stopped
        dpu.run("read -P 0xaa 0 64k")
        if point == "switched":  # the daemon took the snapshot: writes now go above it
            dpu.run("write -P 0xbb 0 64k")
        backend.snapshot("v1", "s1")  # the resumed call
        index = backend.pool.read("v1")
        assert index.pending is None and index.snapshots == {"s1": 0} and index.layers == (0, 1)
        dpu.run("write -P 0xbb 0 64k")
        backend.extend("v1", 2)  # the layer on top is the daemon's own: it outlives the dropped exports
        assert [e.id for e in backend.node.exports()] == ["att-a1"]
    backend.create("r1", 1, snapshot_id="s1")
    qemu_io(backend.export("r1", "a2"), "read -P 0xaa 0 64k")
    qemu_io(uri, "read -P 0xbb 0 64k")
