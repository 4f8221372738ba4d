"""Projects and tokens. Tokens are random strings; only their SHA-256 is stored.

An agent token is issued for one node and speaks for that node only.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import ADMIN, AGENT, ROLES, Caller, find
from dpustack.controller.settings import write_secret
from dpustack.db.models import Node, Project, Token
from dpustack.errors import Conflict, InvalidInput, NotFound, Unauthorized
from dpustack.secrets import digest

ADMIN_PROJECT = "admin"


def authenticate(session: Session, token: str) -> Caller:
    """Resolve a bearer token to its caller, or raise Unauthorized."""
    row = session.scalars(select(Token).where(Token.token_hash == digest(token))).first()
    if row is None:
        raise Unauthorized("unknown token")
    return Caller(project_id=row.project_id, project_name=row.project.name, role=row.role, token_id=row.id,
                  node_id=row.node_id)


def bootstrap_admin(session: Session, token_file: Path) -> None:
    """On first start: create the admin project and token, write the token to `token_file`."""
    if session.scalars(select(Project).where(Project.name == ADMIN_PROJECT)).first() is not None:
        return
    project = Project(name=ADMIN_PROJECT)
    session.add(project)
    session.flush()
    plain = new_token_row(session, project.id, ADMIN, "bootstrap admin")
    write_secret(token_file, plain)


def create_project(session: Session, name: str) -> Project:
    if session.scalars(select(Project).where(Project.name == name)).first() is not None:
        raise Conflict(f"a project named '{name}' already exists", field="name")
    project = Project(name=name)
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.created_at)))


def create_token(session: Session, project_ref: str, role: str, name: str,
                 node_ref: str | None = None) -> tuple[Token, str]:
    """Create a token; the plain value is returned once and never stored.

    An agent token needs the node (id or hostname) it is issued for; other roles take none.
    """
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    if role == AGENT and not node_ref:
        raise InvalidInput("an agent token is issued for one node: give node (its hostname or id)", field="node")
    if role != AGENT and node_ref:
        raise InvalidInput("only agent tokens are issued for a node", field="node")
    project = find(session, Project, project_ref, None, kind="project")
    node_id = None
    if node_ref:
        node = session.get(Node, node_ref) or session.scalars(select(Node).where(Node.hostname == node_ref)).first()
        if node is None:
            raise NotFound(f"node '{node_ref}' not found (enroll it first: POST /v1/nodes)", field="node")
        node_id = node.id
    plain = new_token_row(session, project.id, role, name, node_id=node_id)
    row = session.scalars(select(Token).where(Token.token_hash == digest(plain))).one()
    return row, plain


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.created_at)))


def delete_token(session: Session, token_id: str, caller: Caller) -> None:
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"token '{token_id}' not found", field="token")
    if row.id == caller.token_id:
        raise Conflict("a token cannot delete itself", field="token")
    session.delete(row)


def new_token_row(session: Session, project_id: str, role: str, name: str, *, node_id: str | None = None) -> str:
    """Add a token row and return its plain value (shown once)."""
    plain = secrets.token_urlsafe(32)
    session.add(Token(project_id=project_id, role=role, name=name, token_hash=digest(plain), node_id=node_id))
    session.flush()
    return plain
