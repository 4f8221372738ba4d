"""The statuses of volumes and of their snapshots, in one place.

A volume::

    creating ──> available ──> attaching ──> in-use ──> detaching ──> available
                     │  ^                      │  ^
                     v  │                      v  │
                   extending                 extending
    creating ──> error (its data could not be written; `fault` says why)
    extending ──> error (attached, and its export could not be put back after a failed extend)

A volume is `creating` until the volume backend's `create` has returned, so any other status means
complete data. A snapshot::

    creating ──> available ──> deleting ──> (gone)
        └──────> error <──────────┘
"""

from __future__ import annotations

from enum import StrEnum

from dpustack.db.models import Volume


class VolumeStatus(StrEnum):
    CREATING = "creating"      # the record exists; the data is not complete yet
    AVAILABLE = "available"    # complete data, attached to nothing
    ATTACHING = "attaching"    # exported, being attached to an instance's node
    IN_USE = "in-use"          # attached: served to an instance through a storage function of its DPU
    DETACHING = "detaching"    # being detached; its export ends after the node let go
    EXTENDING = "extending"    # growing (attached or not)
    ERROR = "error"            # see the volume's fault


class SnapshotStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"    # complete: a source for new volumes
    DELETING = "deleting"
    ERROR = "error"            # see the snapshot's fault


# Where a change to a volume's data may start from.
CHANGEABLE = (VolumeStatus.AVAILABLE, VolumeStatus.IN_USE)
# A volume that may be deleted: nothing attaches it and no data is being written.
DELETABLE = (VolumeStatus.AVAILABLE, VolumeStatus.ERROR)
DELETABLE_SNAPSHOT = (SnapshotStatus.AVAILABLE, SnapshotStatus.ERROR)


def at_rest(volume: Volume) -> VolumeStatus:
    """The status a volume returns to when a change of its data ends: in-use while an instance has it."""
    return VolumeStatus.IN_USE if volume.instance_id else VolumeStatus.AVAILABLE
