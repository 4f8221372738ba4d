"""The metadata service's controller end: DPU agents' metadata proxies ask it for their instances.

The proxy names where the instance's request came from in two headers; the
instance is found from those alone (see dpustack.controller.services.instance_metadata).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from dpustack.api.deps import ContextDep, get_caller
from dpustack.controller.services import instance_metadata
from dpustack.controller.services.common import AGENT, Caller
from dpustack.errors import Forbidden
from dpustack.web.http_errors import may_answer

router = APIRouter(prefix="/metadata", tags=["metadata"])


@may_answer(403)
def proxy_caller(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """Only agents proxy metadata: users, admins included, have the instances API."""
    if caller.role != AGENT:
        raise Forbidden("only DPU agents' metadata proxies (agent tokens) may read instance metadata")
    return caller


@router.get("/{path:path}", response_class=Response,
            responses={200: {"content": {"text/plain": {}, "application/json": {}, "application/octet-stream": {}}}})
def read_metadata(
    path: str,
    context: ContextDep,
    caller: Annotated[Caller, Depends(proxy_caller)],
    network_id: Annotated[str | None, Header(alias=instance_metadata.NETWORK_HEADER,
                                             description="The network the instance's request came in on.")] = None,
    forwarded_for: Annotated[str | None, Header(alias=instance_metadata.SOURCE_HEADER,
                                                description="The IPv4 source address of that request.")] = None,
) -> Response:
    """`openstack`, `openstack/latest`, `openstack/latest/meta_data.json`, `openstack/latest/user_data`."""
    network, address = instance_metadata.parse_source(network_id, forwarded_for)
    key = context.settings.secret_key_file
    with context.transaction() as session:
        instance = instance_metadata.instance_at(session, caller, network, address)
        answer = instance_metadata.document(instance, path, key)
    return Response(answer.body, media_type=answer.media_type)
