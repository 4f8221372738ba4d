"""Node reports from agents, and the node inventory for admins."""

from __future__ import annotations

from fastapi import APIRouter

from dpustack.api.deps import AdminDep, AgentDep, RuntimeDep
from dpustack.api.schemas import NodePublic, NodeReport
from dpustack.controller.services import nodes
from dpustack.db.models import Node

router = APIRouter(prefix="/nodes", tags=["nodes"])


def _public(node: Node, down_after: float) -> NodePublic:
    data = NodePublic.model_validate({**{c: getattr(node, c) for c in NodePublic.model_fields if c not in
                                         ("status", "instances")},
                                      "reported_instances": node.reported_instances,
                                      "status": "up" if nodes.is_up(node, down_after) else "down"})
    return data


@router.post("/report", response_model=NodePublic)
def report(body: NodeReport, runtime: RuntimeDep, _: AgentDep) -> NodePublic:
    """Seed 000 `report_node_status`: join on the first report, refresh on every later one.

    The report also carries the node's offered PCI devices, pools, traits and DPUs.
    """
    with runtime.transaction() as session:
        node = nodes.record_report(session, body.model_dump(exclude_none=False))
        return _public(node, runtime.settings.node_down_after)


@router.get("", response_model=list[NodePublic])
def list_nodes(runtime: RuntimeDep, _: AdminDep) -> list[NodePublic]:
    with runtime.transaction() as session:
        return [_public(n, runtime.settings.node_down_after) for n in nodes.list_nodes(session)]


@router.get("/{ref}", response_model=NodePublic)
def show_node(ref: str, runtime: RuntimeDep, _: AdminDep) -> NodePublic:
    with runtime.transaction() as session:
        return _public(nodes.get_node(session, ref), runtime.settings.node_down_after)
