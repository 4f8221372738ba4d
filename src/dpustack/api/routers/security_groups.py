"""Security groups, their rules, and the groups of a port."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dpustack.api.deps import CallerDep, ContextDep
from dpustack.api.schemas import (PortPublic, PortUpdate, SecurityGroupCreate, SecurityGroupPublic,
                                  SecurityGroupRuleCreate, SecurityGroupRulePublic)
from dpustack.controller.services import networks, security_groups
from dpustack.web.http_errors import error_responses

# Every call may change the OVN port groups (listing makes the `default` group on first use).
router = APIRouter(tags=["security groups"], responses=error_responses(502))


@router.post("/security-groups", response_model=SecurityGroupPublic, status_code=201)
def create_group(body: SecurityGroupCreate, context: ContextDep, caller: CallerDep) -> SecurityGroupPublic:
    with context.transaction() as session:
        group = security_groups.create_group(session, caller, context.network, name=body.name,
                                             description=body.description)
        return SecurityGroupPublic.model_validate(group)


@router.get("/security-groups", response_model=list[SecurityGroupPublic])
def list_groups(context: ContextDep, caller: CallerDep) -> list[SecurityGroupPublic]:
    with context.transaction() as session:
        return [SecurityGroupPublic.model_validate(g)
                for g in security_groups.list_groups(session, caller, context.network)]


@router.get("/security-groups/{ref}", response_model=SecurityGroupPublic)
def show_group(ref: str, context: ContextDep, caller: CallerDep) -> SecurityGroupPublic:
    with context.transaction() as session:
        return SecurityGroupPublic.model_validate(security_groups.get_group(session, caller, context.network, ref))


@router.delete("/security-groups/{ref}", status_code=204)
def delete_group(ref: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        security_groups.delete_group(session, caller, context.network, ref)
    return Response(status_code=204)


@router.post("/security-groups/{ref}/rules", response_model=SecurityGroupRulePublic, status_code=201)
def create_rule(ref: str, body: SecurityGroupRuleCreate, context: ContextDep,
                caller: CallerDep) -> SecurityGroupRulePublic:
    with context.transaction() as session:
        rule = security_groups.add_rule(session, caller, context.network, ref, body.model_dump())
        return SecurityGroupRulePublic.model_validate(rule)


@router.delete("/security-group-rules/{rule_id}", status_code=204)
def delete_rule(rule_id: str, context: ContextDep, caller: CallerDep) -> Response:
    with context.transaction() as session:
        security_groups.delete_rule(session, caller, context.network, rule_id)
    return Response(status_code=204)


@router.put("/ports/{ref}", response_model=PortPublic)
def update_port(ref: str, body: PortUpdate, context: ContextDep, caller: CallerDep) -> PortPublic:
    with context.transaction() as session:
        port = networks.set_port_security_groups(session, caller, context.network, ref, body.security_groups)
        return PortPublic.model_validate(port)
