"""Networks and ports (subnets have their own router: routers.subnets)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.api.deps import CallerDep, OrchestratorDep, ContextDep
from dpustack.api.routers.operations import accept
from dpustack.api.schemas import (NetworkCreate, NetworkPublic, OperationPublic, PortCreate, PortPublic,
                                  PortQosUpdate)
from dpustack.controller.services import instances, networks
from dpustack.web.http_errors import error_responses

router = APIRouter(tags=["networks"])


@router.post("/networks", response_model=NetworkPublic, status_code=201, responses=error_responses(502))
def create_network(body: NetworkCreate, context: ContextDep, caller: CallerDep) -> NetworkPublic:
    with context.transaction() as session:
        return NetworkPublic.model_validate(networks.create_network(session, caller, context.network, name=body.name,
                                                                    subnet=body.subnet))


@router.get("/networks", response_model=list[NetworkPublic])
def list_networks(context: ContextDep, caller: CallerDep) -> list[NetworkPublic]:
    with context.transaction() as session:
        return [NetworkPublic.model_validate(n) for n in networks.list_networks(session, caller)]


@router.get("/networks/{ref}", response_model=NetworkPublic)
def show_network(ref: str, context: ContextDep, caller: CallerDep) -> NetworkPublic:
    with context.transaction() as session:
        return NetworkPublic.model_validate(networks.get_network(session, caller, ref))


@router.delete("/networks/{ref}", status_code=204, responses=error_responses(502))
def delete_network(ref: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        networks.delete_network(session, caller, context.network, ref)
    return Response(status_code=204)


@router.post("/ports", response_model=PortPublic, status_code=201, responses=error_responses(404, 502))
def create_port(body: PortCreate, context: ContextDep, caller: CallerDep) -> PortPublic:
    with context.transaction() as session:
        network = networks.get_network(session, caller, body.network)
        return PortPublic.model_validate(networks.create_port(session, caller, context.network, network, name=body.name,
                                                              mac=body.mac, vnic_type=body.vnic_type,
                                                              security_group_refs=body.security_groups))


@router.get("/ports", response_model=list[PortPublic], responses=error_responses(404, 409))
def list_ports(context: ContextDep, caller: CallerDep, instance: str | None = None,
               network: str | None = None) -> list[PortPublic]:
    with context.transaction() as session:
        instance_id = instances.get_instance(session, caller, instance).id if instance else None
        network_id = networks.get_network(session, caller, network).id if network else None
        return [PortPublic.model_validate(p)
                for p in networks.list_ports(session, caller, instance_id=instance_id, network_id=network_id)]


@router.get("/ports/{ref}", response_model=PortPublic)
def show_port(ref: str, context: ContextDep, caller: CallerDep) -> PortPublic:
    with context.transaction() as session:
        return PortPublic.model_validate(networks.get_port(session, caller, ref))


@router.delete("/ports/{ref}", status_code=204, responses=error_responses(502))
def delete_port(ref: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        networks.delete_port(session, caller, context.network, ref)
    return Response(status_code=204)


# -- port QoS: limits on what a port's instance sends; an operation, as the node's agent is called ---
@router.put("/ports/{ref}/qos", response_model=OperationPublic, status_code=202)
def set_port_qos(ref: str, body: PortQosUpdate, context: ContextDep, caller: CallerDep,
                 orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: networks.set_port_qos(s, caller, ref, bps=body.bps, pps=body.pps))


@router.delete("/ports/{ref}/qos", response_model=OperationPublic, status_code=202)
def clear_port_qos(ref: str, context: ContextDep, caller: CallerDep,
                   orchestrator: OrchestratorDep) -> OperationPublic:
    return accept(context, orchestrator, lambda s: networks.set_port_qos(s, caller, ref, bps=None, pps=None))
