"""A volume is attached on one node at a time, but while its instance moves to another node with the source
stopped: then the node it moves to attaches it too, and the first attachment ends when the source let go."""

from __future__ import annotations

import pytest

from dpustack.controller.services import volumes
from dpustack.db.models import Instance, Volume
from dpustack.errors import Conflict


class Exports:
    """A volume backend's exports, as far as the attachment helpers use it."""

    def __init__(self) -> None:
        self.unexported: list[str] = []

    def unexport(self, attachment_id: str) -> None:
        self.unexported.append(attachment_id)


def _pair(status: str) -> tuple[Volume, Instance]:
    instance = Instance(id="i1", name="v1", status=status)
    volume = Volume(id="vol1", name="data1", instance_id="i1", attachment_id="a-source", attached_node="dpu-vm-1",
                    function_id="storage-vol1", bdf="0000:03:00.0")
    return volume, instance


@pytest.mark.parametrize("status", ["ACTIVE", "SHUTOFF", "VERIFY_MIGRATE", "RESIZE"])
def test_a_second_attachment_is_refused_unless_the_instance_moves(status):
    volume, instance = _pair(status)
    with pytest.raises(Conflict) as refused:
        volumes.move_attachment_id(volume, instance, source_power="off")
    assert refused.value.field == "volume" and f"(instance status {status})" in refused.value.message
    assert volume.move_attachment is None


def test_a_second_attachment_is_refused_while_the_instance_runs_on_the_node_it_leaves():
    volume, instance = _pair("MIGRATING")
    with pytest.raises(Conflict) as refused:
        volumes.move_attachment_id(volume, instance, source_power="on")
    assert "only while its instance is off on the node it leaves (it is on there)" in refused.value.message


def test_a_volume_of_another_instance_gets_no_second_attachment():
    volume, instance = _pair("MIGRATING")
    volume.instance_id = "i2"
    with pytest.raises(Conflict):
        volumes.move_attachment_id(volume, instance, source_power="off")


@pytest.mark.parametrize("status", ["MIGRATING", "REVERT_MIGRATE"])
def test_the_second_attachment_becomes_the_volumes_once_the_source_let_go(status):
    volume, instance = _pair(status)
    first = volumes.move_attachment_id(volume, instance, source_power="off")
    assert volumes.move_attachment_id(volume, instance, source_power="off") == first  # a resumed step: the same
    volumes.record_move_attachment(volume, node="dpu-vm-2", function_id="storage-vol1", bdf="0000:04:00.0")
    backend = Exports()

    volumes.switch_to_move_attachment(backend, volume)  # type: ignore[arg-type]

    assert backend.unexported == ["a-source"]
    assert (volume.attachment_id, volume.attached_node, volume.bdf, volume.move_attachment) == (
        first, "dpu-vm-2", "0000:04:00.0", None)
    volumes.switch_to_move_attachment(backend, volume)  # type: ignore[arg-type]  # again: nothing to do
    assert backend.unexported == ["a-source"]


def test_a_move_undone_ends_only_the_second_attachment():
    volume, instance = _pair("MIGRATING")
    second = volumes.move_attachment_id(volume, instance, source_power="off")
    backend = Exports()

    volumes.end_move_attachment(backend, volume)  # type: ignore[arg-type]

    assert backend.unexported == [second]
    assert (volume.attachment_id, volume.attached_node, volume.move_attachment) == ("a-source", "dpu-vm-1", None)
