"""The controller's OpenAPI document describes what the controller answers: schemathesis walks
every operation of it, as an admin, against the real app (on SQLite, in process).

Every answer must be documented for its operation (status, and for errors the
error schema), no answer may be a 5xx, and a method a path does not take must
be a 405 listing those it does take.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (allow_header_conformance, content_type_conformance,
                                               response_schema_conformance, status_code_conformance,
                                               unsupported_method)

from dpustack.api.app import api_app
from harness import Cloud

EXAMPLES_PER_OPERATION = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          unsupported_method, allow_header_conformance]
# GET /v1/nodes/{ref} also serves GET /v1/nodes/report (the node named "report"), so that URL's Allow
# rightly lists GET, which the document's /v1/nodes/report path item does not.
SHADOWED = {"POST /v1/nodes/report": [allow_header_conformance]}


@pytest.fixture(scope="module")
def schema_cloud(tmp_path_factory) -> Iterator[Cloud]:
    """One cloud for the whole walk, with a flavor, an image and a network for the calls to find."""
    tmp_path = tmp_path_factory.mktemp("schema")
    cloud = Cloud(tmp_path, f"sqlite:///{tmp_path}/dpustack.db", nodes=1)
    try:
        cloud.setup_basics()
        yield cloud
    finally:
        cloud.close()


# The document the real app serves (test_the_schema_is_the_one_the_controller_serves); built from the
# routes alone, because schemathesis needs it while the tests are collected.
schema = schemathesis.openapi.from_asgi("/openapi.json", api_app(), config=schemathesis.Config.from_dict({
    "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
}))


@pytest.fixture(scope="module")
def cloud_app(schema_cloud: Cloud):
    """The cloud's app for schemathesis's client, which would otherwise start its lifespan (the workers)
    a second time, and stop it only when the process ends."""
    app = schema_cloud.api.app

    async def serve(scope, receive, send):
        if scope["type"] == "lifespan":
            raise RuntimeError("the cloud fixture runs the lifespan")  # how an app declines it
        await app(scope, receive, send)
    return serve


def test_the_schema_is_the_one_the_controller_serves(schema_cloud: Cloud):
    assert schema_cloud.api.get("/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES_PER_OPERATION)
def test_every_answer_is_documented_and_none_is_a_server_error(case, schema_cloud: Cloud, cloud_app):
    checks = [check for check in CHECKS if check not in SHADOWED.get(case.operation.label, [])]
    case.call_and_validate(app=cloud_app, headers={"Authorization": f"Bearer {schema_cloud.admin_token}"},
                           checks=checks)
