"""The controller's storage reconcile pass, on the files backend: attached volumes whose exports are
gone are served again, a pass that fails changes no status, work an operation is doing is left to it,
an export made as a detach began is taken back, and exports no attachment names are only reported."""

from __future__ import annotations

from dpustack.db.models import Instance, Volume
from dpustack.errors import DriverError


def _attached(cloud) -> dict[str, str]:
    """attachment id -> volume id, of every attached volume."""
    return {v["attachments"][0]["id"]: v["id"] for v in cloud.call("GET", "/v1/volumes") if v["attachments"]}


def _setup(cloud) -> dict[str, str]:
    cloud.setup_basics()
    assert cloud.build("web1", node="dpu-bm-1")["status"] == "succeeded"
    cloud.volume("data1", size=1)
    assert cloud.act("POST", "/v1/instances/web1/volumes", {"volume": "data1"})["status"] == "succeeded"
    attached = _attached(cloud)
    assert cloud.volume_backend.exports == attached and len(attached) == 2
    return attached


def test_a_pass_serves_again_what_lost_its_export_and_leaves_busy_or_unknown_exports_alone(cloud):
    attached = _setup(cloud)
    backend = cloud.volume_backend
    data_id = cloud.call("GET", "/v1/volumes/data1")["id"]
    backend.export(data_id, "stray")  # an export no attachment names
    for attachment_id in attached:
        backend.unexport(attachment_id)  # as a storage node that restarted serves nothing

    backend.arm("export", DriverError("no storage daemon answers"))
    failed = cloud.storage_reconciler.run()
    assert len(failed.errors) == 1 and "no storage daemon answers" in failed.errors[0]
    assert len(failed.repaired) == 1  # one failure does not stop the others
    assert {v["status"] for v in cloud.call("GET", "/v1/volumes")} == {"in-use"}  # nothing made available

    result = cloud.storage_reconciler.run()
    assert result.ok and len(result.repaired) == 1 and result.orphans == ["stray"]
    assert backend.exports == {**attached, "stray": data_id}  # the stray export is reported, not removed
    assert cloud.storage_reconciler.run().repaired == []  # served: nothing to do

    # an instance busy with an operation is left to that operation
    backend.unexport(next(iter(attached)))
    with cloud.context.transaction() as session:
        session.get_one(Instance, cloud.call("GET", "/v1/instances/web1")["id"]).task_state = "reboot"
    assert cloud.storage_reconciler.run().repaired == []
    with cloud.context.transaction() as session:
        session.get_one(Instance, cloud.call("GET", "/v1/instances/web1")["id"]).task_state = None
    assert len(cloud.storage_reconciler.run().repaired) == 1


def test_an_export_made_just_as_a_detach_began_is_taken_back(cloud):
    attached = _setup(cloud)
    backend = cloud.volume_backend
    data = cloud.call("GET", "/v1/volumes/data1")
    (attachment,) = data["attachments"]
    backend.unexport(attachment["id"])
    export = backend.export

    def export_as_the_detach_is_accepted(volume_id: str, attachment_id: str) -> str:
        uri = export(volume_id, attachment_id)
        with cloud.context.transaction() as session:  # the detach's accept commits meanwhile
            session.get_one(Volume, volume_id).status = "detaching"
        return uri

    backend.export = export_as_the_detach_is_accepted  # type: ignore[method-assign]
    result = cloud.storage_reconciler.run()
    assert result.ok and result.repaired == []
    assert backend.calls[-2:] == [("export", data["id"], attachment["id"]), ("unexport", attachment["id"])]
    assert attachment["id"] not in backend.exports
    assert backend.exports == {a: v for a, v in attached.items() if a != attachment["id"]}
