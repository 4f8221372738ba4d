"""The memory storage backend: one volume per storage function, idempotent attach/detach."""

import pytest

from dpustack.drivers.storage import Attachment
from dpustack.drivers.storage.memory import MemoryStorageDriver
from dpustack.errors import DriverError


def test_attaching_twice_is_one_attachment():
    storage = MemoryStorageDriver()

    storage.attach("storage-v1", "v1", "nvmf://10.0.0.5/v1")
    storage.attach("storage-v1", "v1", "nvmf://10.0.0.5/v1")

    assert storage.list() == [Attachment("storage-v1", "v1", "nvmf://10.0.0.5/v1")]
    with pytest.raises(DriverError, match="already attached"):
        storage.attach("storage-v1", "v1", "nvmf://10.0.0.5/v1", may_exist=False)


def test_a_volume_cannot_be_served_by_two_functions_nor_a_function_serve_two_volumes():
    storage = MemoryStorageDriver()
    storage.attach("s1", "v1", "nvmf://x/v1")

    with pytest.raises(DriverError, match="attached to function 's1'"):
        storage.attach("s2", "v1", "nvmf://x/v1")
    with pytest.raises(DriverError, match="already serves volume 'v1'"):
        storage.attach("s1", "v2", "nvmf://x/v2")


def test_detaching_a_missing_attachment_is_fine_unless_if_exists_is_false():
    storage = MemoryStorageDriver()
    storage.attach("s1", "v1", "nvmf://x/v1")

    storage.detach("s1", "v1")
    storage.detach("s1", "v1")

    assert storage.list() == []
    with pytest.raises(DriverError, match="not attached"):
        storage.detach("s1", "v1", if_exists=False)


def test_snapshots_are_unsupported_with_a_readable_error():
    with pytest.raises(DriverError, match="MemoryStorageDriver does not support snapshots"):
        MemoryStorageDriver().snapshot("s1", "v1", "snap-1")
