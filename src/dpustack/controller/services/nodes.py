"""Nodes: enrolment by an admin, status reports from the node's own agent,
liveness, maintenance, removal and credential rotation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dpustack.contract.node import NodeReport, ReportedInstance
from dpustack.contract.numa import check_cells
from dpustack.controller.services import accelerators, identity, node_credentials, pci
from dpustack.controller.services.common import AGENT, Caller
from dpustack.db.models import Instance, Node, Project, Token, utcnow
from dpustack.errors import Conflict, DpustackError, Forbidden, InvalidInput, NotFound
from dpustack.instance_states import STATUS_BY_REPORT
from dpustack.secrets import digest

if TYPE_CHECKING:
    from dpustack.controller.context import ControllerContext

log = logging.getLogger(__name__)


@dataclass
class Enrolment:
    """A new node and the pair its agent.toml needs (shown once)."""

    node: Node
    report_token: str
    controller_credential_sha256: str


def enroll(session: Session, hostname: str, node_type: str, key_file: Path) -> Enrolment:
    """Create a node that may join: its agent token (issued for it alone) and the controller's credential
    for it. The node is not scheduled until its agent reports."""
    if session.scalars(select(Node).where(Node.hostname == hostname)).first() is not None:
        raise Conflict(f"a node named '{hostname}' is already enrolled", field="hostname")
    credential = node_credentials.new_credential()
    node = Node(hostname=hostname, node_type=node_type, ready=False,
                credential_encrypted=node_credentials.seal(credential, key_file))
    session.add(node)
    session.flush()
    token = identity.new_token_row(session, _admin_project_id(session), AGENT, hostname, node_id=node.id)
    return Enrolment(node, token, digest(credential))


def _admin_project_id(session: Session) -> str:
    return session.scalars(select(Project.id).where(Project.name == identity.ADMIN_PROJECT)).one()


def record_report(session: Session, caller: Caller, report: NodeReport, *, require_https: bool) -> Node:
    """Store a report from the caller's own node: an agent token speaks for the node it was issued for."""
    node = session.get(Node, caller.node_id) if caller.node_id else None
    if node is None:
        raise Forbidden("this agent token is issued for no node; enroll the node (POST /v1/nodes) and use "
                        "its token", field="hostname")
    if report.hostname != node.hostname:
        raise Forbidden(f"this agent token is issued for node '{node.hostname}', not '{report.hostname}'",
                        field="hostname")
    if require_https and not report.agent_url.startswith("https://"):
        raise InvalidInput("agent_url: must be https:// (the controller verifies every agent's certificate)",
                           field="agent_url")
    if node.joined_at is None:
        node.joined_at = utcnow()
        log.info("node %s joined", node.hostname)
    node.node_type, node.dpu_model, node.ready, node.agent_url = (report.node_type, report.dpu_model, report.ready,
                                                                  report.agent_url)
    node.total_cpu, node.used_cpu, node.total_mem, node.used_mem = (report.total_cpu, report.used_cpu,
                                                                    report.total_mem, report.used_mem)
    node.reported_instances = [instance.model_dump() for instance in report.instances]
    node.numa_cells = [cell.model_dump(mode="json") for cell in report.numa_cells]
    reason = "" if report.ready else (report.not_ready_reason or "its agent says it is not ready")
    try:
        check_cells(report.numa_cells)
    except ValueError as exc:  # never scheduled on: not ready, and no cells to fit into
        node.ready, node.numa_cells = False, []
        reason = f"its host's NUMA cells are not usable: {exc}"[:1024]
        if reason != node.not_ready_reason:  # once, not on every report
            log.warning("node %s: %s", node.hostname, reason)
    node.not_ready_reason = reason
    node.last_seen = utcnow()
    session.flush()
    _follow_power_changes(session, node, report.instances)
    pci.record_inventory(session, node, report.model_dump())
    accelerators.record_reported(session, node, report.accelerators)
    return node


def _follow_power_changes(session: Session, node: Node, reported: list[ReportedInstance]) -> None:
    """A bare-metal host may be shut down from inside, a VM paused or resumed on its host; follow what the
    node sees (``up``, ``down``, ``paused``).

    Only idle instances are touched: an instance with an action in progress
    is the orchestrator's to update.
    """
    by_uuid: dict[str, str] = {item.uuid: item.status for item in reported}
    idle = session.scalars(select(Instance).where(Instance.node_id == node.id, Instance.deleted.is_(False),
                                                  Instance.task_state.is_(None),
                                                  Instance.status.in_(list(STATUS_BY_REPORT.values())))).all()
    for instance in idle:
        status = STATUS_BY_REPORT.get(by_uuid.get(instance.id, ""))
        if status and status != instance.status:
            instance.status = status


def is_up(node: Node, down_after: float, now: datetime | None = None) -> bool:
    return node.joined_at is not None and (now or utcnow()) - node.last_seen <= timedelta(seconds=down_after)


def status(node: Node, down_after: float) -> str:
    """enrolled (never reported), up or down."""
    if node.joined_at is None:
        return "enrolled"
    return "up" if is_up(node, down_after) else "down"


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.hostname)))


def get_node(session: Session, ref: str, *, field: str = "node") -> Node:
    """A node by id or hostname."""
    node = session.get(Node, ref) or session.scalars(select(Node).where(Node.hostname == ref)).first()
    if node is None:
        raise NotFound(f"node '{ref}' not found", field=field)
    return node


def set_maintenance(session: Session, ref: str, maintenance: bool) -> Node:
    """A node in maintenance keeps its instances but is never chosen for new ones."""
    node = get_node(session, ref)
    node.maintenance = maintenance
    return node


def live_instances(session: Session, node: Node) -> list[Instance]:
    return list(session.scalars(select(Instance).where(Instance.node_id == node.id, Instance.deleted.is_(False))))


def delete_node(session: Session, ref: str, *, forget: Callable[[Session, Instance], Any] | None = None) -> None:
    """Remove a node with its tokens, devices and DPUs. A node that still has instances is refused unless
    `forget` is given: each instance is then forgotten by the controller first (its node is not cleaned). A
    node an instance migrated from, whose migration waits for its confirm or revert, is refused."""
    node = get_node(session, ref)
    waiting = [i.name for i in session.scalars(select(Instance).where(Instance.resize_from.is_not(None),
                                                                      Instance.deleted.is_(False)))
               if (i.resize_from or {}).get("node_id") == node.id]
    if waiting:  # their claims here count until the confirm; a revert builds them here again
        raise Conflict(f"instance(s) {', '.join(sorted(waiting))} migrated from node {node.hostname} and wait for "
                       "migrate-confirm or migrate-revert: confirm or revert first", field="node")
    instances = live_instances(session, node)
    if instances and forget is None:
        names = ", ".join(sorted(i.name for i in instances)[:5])
        raise Conflict(f"node {node.hostname} still has {len(instances)} instance(s) ({names}): evacuate or "
                       "delete them, or delete the node with force to forget them", field="node")
    busy = [i.name for i in instances if i.task_state is not None]
    if busy:
        raise Conflict(f"instance(s) {', '.join(sorted(busy))} on node {node.hostname} have an action in "
                       "progress: wait until it ends", field="node")
    for instance in instances:
        assert forget is not None
        forget(session, instance)
    # deleted instances keep their history, without the node
    session.execute(update(Instance).where(Instance.node_id == node.id).values(node_id=None))
    session.execute(delete(Token).where(Token.node_id == node.id))
    session.delete(node)
    log.info("node %s deleted%s", node.hostname, f" ({len(instances)} instance(s) forgotten)" if instances else "")


def rotate_credentials(context: "ControllerContext", ref: str) -> Node:
    """Give the node a new report token and the controller a new credential for it, with no moment at
    which either side refuses the other (module docstring of node_credentials)."""
    key = context.settings.secret_key_file
    with context.transaction() as session:  # 1: both new secrets stored; the old ones still in force
        node = get_node(session, ref)
        credential = node_credentials.new_credential()
        node.pending_credential_encrypted = node_credentials.seal(credential, key)
        token = identity.new_token_row(session, _admin_project_id(session), AGENT, node.hostname, node_id=node.id)
        new_token_id = session.scalars(select(Token.id).where(Token.token_hash == digest(token))).one()
    try:
        with context.agent(node) as agent:  # 2: the agent reports with the new token, accepts both credentials
            agent.rotate_credentials(token, digest(credential))
    except DpustackError:
        with context.transaction() as session:  # the agent never took them: forget the new pair
            session.execute(delete(Token).where(Token.id == new_token_id))
            session.execute(update(Node).where(Node.id == node.id).values(pending_credential_encrypted=None))
        raise
    with context.transaction() as session:  # 3: the controller switches; the old agent tokens are revoked
        node = get_node(session, ref)
        node.credential_encrypted = node.pending_credential_encrypted or node.credential_encrypted
        node.pending_credential_encrypted = None
        session.execute(delete(Token).where(Token.node_id == node.id, Token.id != new_token_id))
    with context.agent(node) as agent:  # 4: first use of the new credential: the agent drops the old one
        agent.status()
    log.info("credentials of node %s rotated", node.hostname)
    return node
