"""The seed's /accelerators API, every status code of it, through the real API on SQLite and PostgreSQL:
accelerators the agents report, ones a project registers, spec updates and attaches that race."""

from __future__ import annotations

import threading
import uuid
from typing import Any

GPU = {"key": "gpu:0000:3b:00.0", "family": "gpu", "address": "0000:3b:00.0", "vendor_id": "10de",
       "product_id": "20b5", "name": "NVIDIA A100 PCIe 80GB", "numa_node": 0, "resource_class": "PGPU",
       "traits": ["CUSTOM_GPU_NVIDIA"],
       "specs": {"remote": 0, "num": 1, "device_type": "GPU", "acc_capability": {"memory_mib": 81920}}}
IPSEC = {"remote": 0, "num": 1, "device_type": "CRYPTO", "acc_capability": {"num": 2, "ipsec": {"aes": {"3des": 50}}}}


def _error(answer) -> tuple[int, str | None]:
    return answer.status_code, answer.json()["error"].get("field")


def _member(cloud, project: str) -> dict[str, str]:
    cloud.call("POST", "/v1/projects", {"name": project})
    token = cloud.call("POST", "/v1/tokens", {"project": project, "role": "member"})["token"]
    return {"Authorization": f"Bearer {token}"}


def _register(cloud, name: str, headers: dict[str, str] | None = None, **body: Any) -> str:
    answer = cloud.api.post("/accelerators", json={"name": name, **body}, headers=headers or {})
    assert answer.status_code == 201 and answer.content == b"", answer.text
    location = answer.headers["Location"]
    assert location.startswith("/accelerators/")
    return location.removeprefix("/accelerators/")


def _gpu_of(cloud) -> dict[str, Any]:
    cloud.report("dpu-bm-1", accelerators=[GPU])
    [gpu] = [a for a in cloud.api.get("/accelerators").json()["accelerator"] if a["node"] == "dpu-bm-1"]
    return gpu


def test_a_reported_accelerator_is_listed_inactive_at_the_seeds_paths_and_marked_missing_when_gone(cloud):
    assert cloud.api.get("/accelerators").json() == {"accelerator": []}
    gpu = _gpu_of(cloud)
    assert gpu["acc_specs"] == GPU["specs"] and uuid.UUID(gpu["uuid"])
    assert (gpu["node"], gpu["state"], gpu["family"], gpu["attached"]) == ("dpu-bm-1", "inactive", "gpu", None)
    assert gpu["name"] == "dpu-bm-1.gpu-0000-3b-00.0"
    assert cloud.api.get(f"/accelerators/{gpu['uuid']}").json() == gpu
    assert cloud.api.get(f"/v1/accelerators/{gpu['uuid']}").json() == gpu
    cloud.report("dpu-bm-1", accelerators=[GPU])  # the same again: nothing changes
    assert cloud.api.get(f"/accelerators/{gpu['uuid']}").json() == gpu
    cloud.report("dpu-bm-1")  # an agent that leaves the field out: nothing changes
    assert cloud.api.get(f"/accelerators/{gpu['uuid']}").json()["state"] == "inactive"
    cloud.report("dpu-bm-1", accelerators=[])
    gone = cloud.api.get(f"/accelerators/{gpu['uuid']}").json()
    assert (gone["state"], gone["fault"]) == ("missing", "its node no longer reports it")
    cloud.report("dpu-bm-1", accelerators=[{**GPU, "specs": {**GPU["specs"], "num": 2}}])
    back = cloud.api.get(f"/accelerators/{gpu['uuid']}").json()
    assert (back["state"], back["fault"], back["acc_specs"]["num"], back["revision"]) == ("inactive", None, 2, 2)


def test_get_of_an_unknown_accelerator_is_a_404_naming_uuid(cloud):
    for path in ("/accelerators/", "/v1/accelerators/"):
        assert _error(cloud.api.get(path + str(uuid.uuid4()))) == (404, "uuid")


def test_post_registers_201_with_a_location_and_refuses_what_the_schema_refuses(cloud):
    chosen = str(uuid.uuid4())
    assert _register(cloud, "ipsec-card", uuid=chosen) == chosen
    shown = cloud.api.get(f"/accelerators/{chosen}").json()
    assert (shown["name"], shown["state"], shown["node"], shown["acc_specs"]) == ("ipsec-card", "registered",
                                                                                  None, {})
    assert _error(cloud.api.post("/accelerators", json={"name": "ipsec-card"})) == (409, "name")
    assert _error(cloud.api.post("/accelerators", json={"name": "other", "uuid": chosen})) == (409, "uuid")
    assert _error(cloud.api.post("/accelerators", json={"uuid": str(uuid.uuid4())})) == (400, "name")
    assert _error(cloud.api.post("/accelerators", json={"name": "x", "uuid": "not-a-uuid"})) == (400, "uuid")
    assert _error(cloud.api.post("/accelerators", json={"name": "x", "vendor": "acme"})) == (400, "vendor")
    assert _error(cloud.api.post("/accelerators", json={"name": 7})) == (400, "name")
    assert [a["name"] for a in cloud.api.get("/accelerators").json()["accelerator"]] == ["ipsec-card"]
    assert _register(cloud, "no-uuid-given")  # one is made


def test_put_of_a_spec_updates_it_and_says_404_400_and_409(cloud):
    card = _register(cloud, "ipsec-card")
    answer = cloud.api.put(f"/accelerators/{card}/acc_specs", json={"acc_specs": IPSEC})
    assert answer.status_code == 200 and answer.json()["acc_specs"] == IPSEC, answer.text
    assert (answer.json()["revision"], answer.headers["ETag"]) == (2, '"2"')
    answer = cloud.api.put(f"/accelerators/{card}/num", json={"num": 4})
    assert answer.status_code == 200 and answer.json()["acc_specs"] == {**IPSEC, "num": 4}, answer.text
    assert _error(cloud.api.put(f"/accelerators/{uuid.uuid4()}/acc_specs", json={"acc_specs": IPSEC})) == (404,
                                                                                                          "uuid")
    assert _error(cloud.api.put(f"/accelerators/{card}/colour", json={"colour": 1})) == (404, "acc_spec")
    assert _error(cloud.api.put(f"/accelerators/{card}/num", json={"num": -1})) == (400, "acc_specs.num")
    assert _error(cloud.api.put(f"/accelerators/{card}/num", json={"remote": 1})) == (400, "num")
    assert _error(cloud.api.put(f"/accelerators/{card}/acc_specs", json={"acc_specs": [1]})) == (400, "acc_specs")
    bad_type = {"acc_specs": {**IPSEC, "device_type": "crypto card"}}
    assert _error(cloud.api.put(f"/accelerators/{card}/acc_specs", json=bad_type)) == (400, "acc_specs.device_type")
    assert _error(cloud.api.put(f"/accelerators/{card}/acc_specs", json={"acc_specs": IPSEC},
                                headers={"If-Match": "yesterday"})) == (400, "If-Match")
    stale = cloud.api.put(f"/accelerators/{card}/acc_specs", json={"acc_specs": IPSEC}, headers={"If-Match": '"2"'})
    assert _error(stale) == (409, "acc_spec") and "another writer" in stale.json()["error"]["message"]
    current = cloud.api.get(f"/accelerators/{card}").headers["ETag"]
    answer = cloud.api.put(f"/accelerators/{card}/acc_specs", json={"acc_specs": IPSEC}, headers={"If-Match": current})
    assert answer.status_code == 200 and answer.json()["acc_specs"] == IPSEC, answer.text
    gpu = _gpu_of(cloud)  # a discovered accelerator's specs are its driver's
    assert _error(cloud.api.put(f"/accelerators/{gpu['uuid']}/num", json={"num": 9})) == (409, "acc_spec")


def _race(count: int, call) -> list[int]:
    """Run `call` from `count` threads at once; their status codes."""
    start = threading.Barrier(count)
    codes: list[int] = []

    def one(i: int) -> None:
        start.wait()
        codes.append(call(i).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(codes)


def test_of_concurrent_spec_updates_from_the_same_revision_exactly_one_wins(cloud):
    card = _register(cloud, "ipsec-card")
    etag = cloud.api.get(f"/accelerators/{card}").headers["ETag"]
    codes = _race(6, lambda i: cloud.api.put(f"/accelerators/{card}/acc_specs", headers={"If-Match": etag},
                                             json={"acc_specs": {**IPSEC, "num": i + 1}}))
    assert codes == [200] + [409] * 5
    shown = cloud.api.get(f"/accelerators/{card}").json()
    assert shown["revision"] == 2 and 1 <= shown["acc_specs"]["num"] <= 6


def test_put_attaches_to_the_callers_project_once_and_delete_detaches(cloud):
    card = _register(cloud, "ipsec-card")
    body = {"name": "ipsec-card", "uuid": card}
    answer = cloud.api.put(f"/accelerators/{card}", json=body)
    assert answer.status_code == 200, answer.text
    admin_project = cloud.call("GET", "/v1/whoami")["project_id"]
    assert (answer.json()["attached"], answer.json()["project_id"]) == ("host", admin_project)
    assert _error(cloud.api.put(f"/accelerators/{card}", json=body)) == (409, "uuid")
    assert _error(cloud.api.put(f"/accelerators/{uuid.uuid4()}", json=body)) == (404, "uuid")
    assert _error(cloud.api.put(f"/accelerators/{card}", json={"name": "other-card", "uuid": card})) == (400, "name")
    assert _error(cloud.api.put(f"/accelerators/{card}", json={"name": "ipsec-card",
                                                               "uuid": str(uuid.uuid4())})) == (400, "uuid")
    assert _error(cloud.api.put(f"/accelerators/{card}", json={"uuid": card})) == (400, "name")
    answer = cloud.api.delete(f"/accelerators/{card}")
    assert answer.status_code == 204 and answer.content == b""
    assert cloud.api.get(f"/accelerators/{card}").json()["attached"] is None
    assert cloud.api.delete(f"/accelerators/{card}").status_code == 204  # detached already: nothing to do
    assert _error(cloud.api.delete(f"/accelerators/{uuid.uuid4()}")) == (404, "uuid")
    gpu = _gpu_of(cloud)  # not installed yet: an operator sets it ready first
    inactive = cloud.api.put(f"/accelerators/{gpu['uuid']}", json={"name": gpu["name"], "uuid": gpu["uuid"]})
    assert _error(inactive) == (409, "uuid") and "inactive" in inactive.json()["error"]["message"]


def test_of_concurrent_attaches_exactly_one_gets_200(cloud):
    card = _register(cloud, "ipsec-card")
    codes = _race(6, lambda i: cloud.api.put(f"/accelerators/{card}", json={"name": "ipsec-card", "uuid": card}))
    assert codes == [200] + [409] * 5


def test_a_project_sees_its_own_and_free_accelerators_only_and_every_call_is_authenticated(cloud):
    blue, red = _member(cloud, "blue"), _member(cloud, "red")
    card = _register(cloud, "blue-card", blue)
    gpu = _gpu_of(cloud)
    assert sorted(a["name"] for a in cloud.api.get("/accelerators", headers=blue).json()["accelerator"]) == [
        "blue-card", gpu["name"]]
    assert [a["name"] for a in cloud.api.get("/accelerators", headers=red).json()["accelerator"]] == [gpu["name"]]
    for method, path, body in (("GET", f"/accelerators/{card}", None), ("DELETE", f"/accelerators/{card}", None),
                               ("PUT", f"/accelerators/{card}", {"name": "blue-card", "uuid": card}),
                               ("PUT", f"/accelerators/{card}/acc_specs", {"acc_specs": IPSEC})):
        assert _error(cloud.api.request(method, path, json=body, headers=red)) == (404, "uuid"), (method, path)
    assert cloud.api.put(f"/accelerators/{card}", json={"name": "blue-card", "uuid": card},
                         headers=blue).status_code == 200
    assert len(cloud.api.get("/accelerators").json()["accelerator"]) == 2  # an admin sees every one
    for method, path in (("GET", "/accelerators"), ("GET", f"/accelerators/{card}"), ("POST", "/accelerators"),
                         ("PUT", f"/accelerators/{card}"), ("DELETE", f"/accelerators/{card}")):
        answer = cloud.api.request(method, path, json={"name": "x"}, headers={"Authorization": ""})
        assert answer.status_code == 401, (method, path, answer.text)
        agent = {"Authorization": f"Bearer {cloud.agent_token('dpu-bm-1')}"}
        assert cloud.api.request(method, path, json={"name": "x"}, headers=agent).status_code == 403, (method, path)


def test_a_report_naming_one_key_twice_is_a_400_and_changes_nothing(cloud):
    answer = cloud.api.post("/v1/nodes/report", json={**cloud.report_body("dpu-bm-1"), "accelerators": [GPU, GPU]},
                            headers={"Authorization": f"Bearer {cloud.agent_token('dpu-bm-1')}"})
    assert _error(answer) == (400, "accelerators"), answer.text
    assert cloud.api.get("/accelerators").json() == {"accelerator": []}


def test_the_cli_registers_describes_attaches_and_detaches(cloud, monkeypatch):
    from typer.testing import CliRunner

    from dpustack.cli import context as cli_context
    from dpustack.cli.main import app as cli_app
    from dpustack.client import Client
    from harness import ControllerTransport

    monkeypatch.setattr(cli_context, "make_client",
                        lambda url, token: Client(url, token, transport=ControllerTransport(cloud.api)))
    env = {"DPUSTACK_URL": "http://controller.test", "DPUSTACK_TOKEN": cloud.admin_token, "COLUMNS": "200"}

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli_app, ["accelerator", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    import json
    card = json.loads(run("register", "ipsec-card", "-f", "json"))
    assert (card["name"], card["state"]) == ("ipsec-card", "registered")
    specs = json.loads(run("set-spec", "ipsec-card", "acc_specs", json.dumps(IPSEC), "-f", "json"))
    assert specs["acc_specs"] == IPSEC and specs["revision"] == 2
    assert json.loads(run("set-spec", card["uuid"], "num", "3", "-f", "json"))["acc_specs"]["num"] == 3
    assert json.loads(run("attach", "ipsec-card", "-f", "json"))["attached"] == "host"
    listed = run("list")
    assert "ipsec-card" in listed and "CRYPTO" in listed and "host" in listed
    assert "accelerator ipsec-card detached" in run("detach", "ipsec-card")
    assert json.loads(run("show", "ipsec-card", "-f", "json"))["attached"] is None
    refused = CliRunner().invoke(cli_app, ["accelerator", "set-spec", "ipsec-card", "num", "--", "-1"], env=env)
    assert refused.exit_code != 0 and "acc_specs.num" in refused.output, refused.output
