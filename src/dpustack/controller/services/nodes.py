"""Node join and liveness: agents report (seed 000 `report_node_status`), the controller keeps it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services import pci
from dpustack.db.models import Instance, Node, utcnow
from dpustack.errors import NotFound

# An instance's reported power state, as the agent sees it, against ours.
_POWER_FROM_REPORT = {"up": "ACTIVE", "down": "SHUTOFF"}


def record_report(session: Session, report: dict[str, Any]) -> Node:
    """Store a node report; the first report of a hostname joins the node."""
    node = session.scalars(select(Node).where(Node.hostname == report["hostname"])).first()
    if node is None:
        node = Node(hostname=report["hostname"], node_type=report["node_type"])
        session.add(node)
    for key in ("node_type", "dpu_model", "ready", "agent_url", "total_cpu", "used_cpu",
                "total_mem", "used_mem"):
        setattr(node, key, report[key])
    node.reported_instances = report["instances"]
    node.last_seen = utcnow()
    session.flush()
    _follow_power_changes(session, node, report["instances"])
    pci.record_inventory(session, node, report)
    return node


def _follow_power_changes(session: Session, node: Node, reported: list[dict[str, Any]]) -> None:
    """A bare-metal host may be shut down from inside; follow what the node sees.

    Only idle instances are touched: an instance with an action in progress
    is the orchestrator's to update.
    """
    by_uuid = {item["uuid"]: item["status"] for item in reported}
    idle = session.scalars(select(Instance).where(Instance.node_id == node.id, Instance.deleted.is_(False),
                                                  Instance.task_state.is_(None),
                                                  Instance.status.in_(("ACTIVE", "SHUTOFF")))).all()
    for instance in idle:
        status = _POWER_FROM_REPORT.get(by_uuid.get(instance.id, ""))
        if status and status != instance.status:
            instance.status = status


def is_up(node: Node, down_after: float, now: datetime | None = None) -> bool:
    return (now or utcnow()) - node.last_seen <= timedelta(seconds=down_after)


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.hostname)))


def get_node(session: Session, ref: str, *, field: str = "node") -> Node:
    """A node by id or hostname."""
    node = session.get(Node, ref) or session.scalars(select(Node).where(Node.hostname == ref)).first()
    if node is None:
        raise NotFound(f"node '{ref}' not found", field=field)
    return node
