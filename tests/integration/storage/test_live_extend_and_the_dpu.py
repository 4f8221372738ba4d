"""What a live extend means for the host behind a DPU: the storage node serves the new size at once;
the DPU's NBD client reconnects to the re-added export and keeps the size it had, so the storage
function goes on announcing the old capacity until the volume is attached anew (docs/storage.md)."""

from __future__ import annotations

import shutil

from dpustack.controller.volumebackend import GiB
from dpustack.drivers.storage.qsd import QsdStorageDriver
from storage_daemons import disk_size
from storage_node import StorageDaemon, qemu_io, short_directory


def test_the_host_sees_a_live_extend_at_its_next_attach(storage):
    backend = storage.backend
    backend.create("v1", 1)
    uri = backend.export("v1", "a1")
    directory = short_directory()
    dpu = StorageDaemon(directory)  # the DPU's daemon, driven by the qsd driver
    dpu.start()
    driver = QsdStorageDriver(qmp_socket=dpu.qmp_socket, socket_dir=directory / "fn", timeout=5)
    try:
        driver.attach("storage-v1", "v1", uri)
        function = driver.socket_path("storage-v1")
        assert disk_size(function) == GiB

        backend.extend("v1", 2)
        assert qemu_io(uri, "length").strip() == "2 GiB"  # the storage node: at once
        assert [a.volume_id for a in driver.list()] == ["v1"] and disk_size(function) == GiB  # the host: not yet

        driver.detach("storage-v1", "v1")
        driver.attach("storage-v1", "v1", uri)
        assert disk_size(function) == 2 * GiB  # attached anew: the new size
        driver.detach("storage-v1", "v1")
    finally:
        driver.close()
        dpu.stop()
        shutil.rmtree(directory, ignore_errors=True)
