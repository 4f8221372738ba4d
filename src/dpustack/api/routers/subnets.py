"""Subnets: the IPv4 address ranges of a network, each with its own gateway, DNS servers and DHCP switch."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.api.deps import CallerDep, ContextDep
from dpustack.api.schemas import SubnetCreate, SubnetPublic
from dpustack.controller.services import networks
from dpustack.web.http_errors import error_responses

router = APIRouter(tags=["networks"])


@router.post("/subnets", response_model=SubnetPublic, status_code=201, responses=error_responses(404, 502))
def create_subnet(body: SubnetCreate, context: ContextDep, caller: CallerDep) -> SubnetPublic:
    with context.transaction() as session:
        network = networks.get_network(session, caller, body.network)
        subnet = networks.create_subnet(session, caller, context.network, network, cidr=body.cidr, name=body.name,
                                        gateway_ip=body.gateway_ip, dns_nameservers=body.dns_nameservers,
                                        enable_dhcp=body.enable_dhcp)
        return SubnetPublic.model_validate(subnet)


@router.get("/subnets", response_model=list[SubnetPublic], responses=error_responses(404, 409))
def list_subnets(context: ContextDep, caller: CallerDep, network: str | None = None) -> list[SubnetPublic]:
    with context.transaction() as session:
        network_id = networks.get_network(session, caller, network).id if network else None
        return [SubnetPublic.model_validate(s) for s in networks.list_subnets(session, caller, network_id=network_id)]


@router.get("/subnets/{ref}", response_model=SubnetPublic)
def show_subnet(ref: str, context: ContextDep, caller: CallerDep) -> SubnetPublic:
    with context.transaction() as session:
        return SubnetPublic.model_validate(networks.get_subnet(session, caller, ref))


@router.delete("/subnets/{ref}", status_code=204, responses=error_responses(502))
def delete_subnet(ref: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        networks.delete_subnet(session, caller, context.network, ref)
    return Response(status_code=204)
