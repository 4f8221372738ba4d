"""Nodes: enrolment, reports from each node's own agent, and the node inventory for admins."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from dpustack.api.deps import AdminDep, AgentDep, ContextDep
from dpustack.api.schemas import NodeEnroll, NodeEnrolled, NodePublic, NodeUpdate
from dpustack.contract.node import NodeReport
from dpustack.contract.numa import NumaPlacement
from dpustack.controller.numa_fit import CellFree
from dpustack.controller.services import instances, nodes, numa
from dpustack.db.models import Node
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/nodes", tags=["nodes"])


def _public(session: Session, node: Node, down_after: float,
            placements: dict[str, list[NumaPlacement]] | None = None) -> NodePublic:
    """The node as the API shows it; `placements` are those held on it (read here when not given)."""
    if placements is None:
        placements = numa.placements_by_node(session, [node.id])
    return NodePublic.model_validate({**{c: getattr(node, c) for c in NodePublic.model_fields if c not in
                                         ("status", "instances", "numa_cells")},
                                      "reported_instances": node.reported_instances,
                                      "numa_cells": _cells(node, placements.get(node.id, [])),
                                      "status": nodes.status(node, down_after)})


def _cells(node: Node, placements: list[NumaPlacement]) -> list[dict[str, Any]]:
    """Each reported cell with its free figures (numa_fit's, beside the placements held on the node)."""
    free = {cell.id: cell for cell in numa.free_of(node, placements)}
    return [{**cell.model_dump(), "free": _free(free[cell.id])} for cell in numa.cells_of(node)]


def _free(cell: CellFree) -> dict[str, Any]:
    return {"cpus": cell.cpus, "pinnable_cpus": cell.pinnable_cpus, "memory_mib": cell.memory_mib,
            "hugepages": [{"size_kib": size, "free": count} for size, count in cell.hugepages.items()]}


@router.post("", response_model=NodeEnrolled, status_code=201)
def enroll(body: NodeEnroll, context: ContextDep, _: AdminDep) -> NodeEnrolled:
    """Enroll a node: the answer holds its agent's report token and the SHA-256 of the credential the
    controller will present to it, shown this once."""
    with context.transaction() as session:
        enrolment = nodes.enroll(session, body.hostname, body.node_type, context.settings.secret_key_file)
        return NodeEnrolled(node=_public(session, enrolment.node, context.settings.node_down_after),
                            report_token=enrolment.report_token,
                            controller_credential_sha256=enrolment.controller_credential_sha256)


@router.post("/report", response_model=NodePublic)
def report(body: NodeReport, context: ContextDep, caller: AgentDep) -> NodePublic:
    """A node's status report (capacity, hardware, health), accepted only from the agent token issued for that hostname.

    The report also carries the node's offered PCI devices, pools, traits and DPUs.
    """
    with context.transaction() as session:
        node = nodes.record_report(session, caller, body, require_https=not context.settings.insecure)
        return _public(session, node, context.settings.node_down_after)


@router.get("", response_model=list[NodePublic])
def list_nodes(context: ContextDep, _: AdminDep) -> list[NodePublic]:
    with context.transaction() as session:
        found = nodes.list_nodes(session)
        placements = numa.placements_by_node(session, [n.id for n in found])
        return [_public(session, n, context.settings.node_down_after, placements) for n in found]


@router.get("/{ref}", response_model=NodePublic)
def show_node(ref: str, context: ContextDep, _: AdminDep) -> NodePublic:
    with context.transaction() as session:
        return _public(session, nodes.get_node(session, ref), context.settings.node_down_after)


@router.patch("/{ref}", response_model=NodePublic)
def update_node(ref: str, body: NodeUpdate, context: ContextDep, _: AdminDep) -> NodePublic:
    """Put a node in or out of maintenance (never scheduled while in it)."""
    with context.transaction() as session:
        return _public(session, nodes.set_maintenance(session, ref, body.maintenance),
                       context.settings.node_down_after)


@router.delete("/{ref}", status_code=204, responses=error_responses(502))
def delete_node(ref: str, context: ContextDep, _: AdminDep,
                force: bool = Query(False, description="forget the node's instances first (their node is "
                                                       "not cleaned)")) -> Response:
    """Remove a node and its tokens; 409 while it has instances, unless force."""
    forget = partial(instances.release_without_node, network=context.network,
                     volume_backend=context.volume_backend) if force else None
    with context.transaction() as session:
        nodes.delete_node(session, ref, forget=forget)
    return Response(status_code=204)


@router.post("/{ref}/rotate-credentials", response_model=NodePublic, responses=error_responses(502))
def rotate_credentials(ref: str, context: ContextDep, _: AdminDep) -> NodePublic:
    """New credentials in both directions, handed to the node's agent over the current authenticated channel;
    neither side refuses the other at any moment."""
    node = nodes.rotate_credentials(context, ref)
    with context.transaction() as session:
        return _public(session, nodes.get_node(session, node.id), context.settings.node_down_after)
