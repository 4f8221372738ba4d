"""What the controller's OpenAPI document promises about errors, and its 405 answers, from the routes alone."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI

from dpustack.api.app import api_app
from dpustack.api.deps import AdminDep
from dpustack.web.http_errors import error_responses, install_error_handlers, may_answer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns about its httpx-based TestClient
    from fastapi.testclient import TestClient

ERROR_SCHEMA = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(api_app())


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def errors_of(document: dict[str, Any], method: str, path: str) -> list[int]:
    return sorted(int(status) for status in document["paths"][path][method]["responses"] if int(status) >= 400)


@pytest.mark.parametrize("method, path, allowed", [
    ("PATCH", "/v1/flavors/bm.small", "DELETE, GET"),
    ("OPTIONS", "/v1/ports/p1", "DELETE, GET, PUT"),   # the PUT comes from another router
    ("HEAD", "/v1/flavors", "GET, POST"),
    ("POST", "/v1/instances/web1/console", "GET"),
    ("PUT", "/v1/whoami", "GET"),
])
def test_a_method_a_path_does_not_take_is_a_405_listing_every_method_it_takes(client: TestClient, method, path,
                                                                              allowed):
    answer = client.request(method, path)  # no token: the method is wrong whoever asks

    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    if method != "HEAD":
        assert answer.json()["error"] == {"code": "method_not_allowed",
                                          "message": f"{method} is not allowed on {path}; it takes {allowed}"}


def test_no_operation_documents_422_and_every_error_has_the_error_schema(document):
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "422" not in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == ERROR_SCHEMA, (method, path, status)
                    assert response["description"].split(":")[0] in (
                        "invalid_input", "unauthorized", "forbidden", "not_found", "conflict",
                        "driver_error or node_unreachable"), (method, path, status)


def test_the_error_schema_is_a_named_component(document):
    schemas = document["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert schemas["ErrorBody"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert schemas["ErrorDetail"]["required"] == ["code", "message"]
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "field"}


@pytest.mark.parametrize("method, path, statuses", [
    ("get", "/healthz", []),
    ("get", "/v1/whoami", [401]),                              # any valid token
    ("get", "/v1/flavors", [401, 403]),                        # agent tokens may not
    ("post", "/v1/flavors", [400, 401, 403, 409]),
    ("get", "/v1/flavors/{ref}", [400, 401, 403, 404, 409]),   # 409: a name several projects use
    ("post", "/v1/ports", [400, 401, 403, 404, 409, 502]),     # the network it names; OVN
    ("get", "/v1/ports", [400, 401, 403, 404, 409]),           # ?network= and ?instance= name resources
    ("post", "/v1/nodes/report", [400, 401, 403, 409]),
    ("get", "/v1/metadata/{path}", [400, 401, 403, 404, 409]),
    ("get", "/v1/instances/{ref}/console", [400, 401, 403, 404, 409, 502]),
    ("post", "/v1/instances/{ref}/admin-password", [400, 401, 403, 404, 409]),  # 409: deleted, busy, VM not ACTIVE
    ("post", "/v1/volumes", [400, 401, 403, 404, 409]),                   # the image or snapshot it names
    ("post", "/v1/volumes/{ref}/extend", [400, 401, 403, 404, 409]),
    ("get", "/v1/snapshots", [401, 403]),
    ("delete", "/v1/snapshots/{ref}", [400, 401, 403, 404, 409]),
])
def test_each_operation_documents_the_errors_it_answers(document, method, path, statuses):
    assert errors_of(document, method, path) == statuses


@pytest.mark.parametrize("method, path, answer", [
    ("post", "/v1/volumes", "VolumePublic"),                # the new volume, naming its operation
    ("post", "/v1/volumes/{ref}/snapshots", "SnapshotPublic"),
    ("post", "/v1/volumes/{ref}/extend", "OperationPublic"),
    ("post", "/v1/volumes/{ref}/flatten", "OperationPublic"),
    ("delete", "/v1/snapshots/{ref}", "OperationPublic"),
])
def test_long_volume_actions_answer_202_with_what_they_made_or_their_operation(document, method, path, answer):
    responses = document["paths"][path][method]["responses"]
    assert [status for status in responses if status.startswith("2")] == ["202"]
    assert responses["202"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{answer}"}


def test_deleting_an_image_answers_204_when_gone_or_202_with_the_operation_flattening_its_volumes(document):
    responses = document["paths"]["/v1/images/{ref}"]["delete"]["responses"]
    assert sorted(status for status in responses if status.startswith("2")) == ["202", "204"]
    assert "content" not in responses["204"]
    assert responses["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OperationPublic"}
    assert errors_of(document, "delete", "/v1/images/{ref}") == [400, 401, 403, 404, 409]


def test_a_new_admin_password_answers_204_for_a_host_next_boot_and_202_with_the_operation_for_a_vm(document):
    operation = document["paths"]["/v1/instances/{ref}/admin-password"]["post"]
    assert sorted(status for status in operation["responses"] if status.startswith("2")) == ["202", "204"]
    assert "content" not in operation["responses"]["204"]
    assert "next boot" in operation["responses"]["204"]["description"]
    assert operation["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OperationPublic"}
    assert "guest agent" in operation["responses"]["202"]["description"]
    assert "next boot" in operation["description"] and "guest agent" in operation["description"]
    body = document["components"]["schemas"]["AdminPasswordReset"]
    assert body["required"] == ["new_password"] and body["additionalProperties"] is False
    password = body["properties"]["new_password"]
    assert (password["minLength"], password["maxLength"], password["format"], password["writeOnly"]) == \
        (1, 255, "password", True)


@may_answer(404)
def feature_switch() -> str:
    """A dependency that refuses with 404 while a feature is off (as the agent's [pci] routes do)."""
    return "on"


FeatureDep = Annotated[str, Depends(feature_switch)]


def test_a_route_added_later_documents_its_errors_from_its_dependencies_and_shape():
    # As a new router would be written: nothing but the usual dependencies and, for what its shape
    # does not tell, `error_responses`.
    router = APIRouter(prefix="/things", responses=error_responses(502, 415))

    @router.patch("/{ref}")
    def change_thing(ref: str, _: AdminDep) -> dict[str, str]:
        return {}

    @router.get("")
    def list_things(_: AdminDep, found: FeatureDep) -> list[str]:
        return []

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router, prefix="/v1")
    document = TestClient(app).get("/openapi.json").json()

    assert errors_of(document, "patch", "/v1/things/{ref}") == [400, 401, 403, 404, 409, 415, 502]
    assert errors_of(document, "get", "/v1/things") == [401, 403, 404, 415, 502]
    assert document["paths"]["/v1/things"]["get"]["responses"]["415"] == {
        "description": "invalid_input", "content": ERROR_SCHEMA}
