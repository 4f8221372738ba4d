"""Credential rotation: the controller hands this node a new pair over the authenticated channel."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.agent.routes.deps import ServiceDep
from dpustack.contract.node import CredentialsRotation

router = APIRouter(prefix="/v1", tags=["node"])


@router.put("/credentials", status_code=204)
def rotate(body: CredentialsRotation, service: ServiceDep) -> Response:
    """Report with the new token from now on; accept the controller's new credential beside the current one
    until the controller first uses it (then the old one passes for a short grace period only)."""
    service.credentials.rotate(body.report_token.get_secret_value(), body.controller_credential_sha256)
    return Response(status_code=204)
