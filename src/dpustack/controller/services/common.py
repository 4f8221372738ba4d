"""What every service needs: the caller's identity and project-scoped lookups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dpustack.errors import Conflict, Forbidden, NotFound

ADMIN, MEMBER, AGENT = "admin", "member", "agent"
ROLES = (ADMIN, MEMBER, AGENT)

M = TypeVar("M")


@dataclass(frozen=True)
class Caller:
    """Who is calling: resolved from the bearer token on every request."""

    project_id: str
    project_name: str
    role: str
    token_id: str
    node_id: str | None = None  # an agent token's node: the only node it may speak for

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this needs an admin token")


def scoped(query: Select[Any], model: Any, caller: Caller) -> Select[Any]:
    """Limit a query to the caller's project unless the caller is an admin."""
    if caller.is_admin:
        return query
    return query.where(model.project_id == caller.project_id)


def find(session: Session, model: type[M], ref: str, caller: Caller | None, *, kind: str,
         field: str | None = None, extra: Any = None) -> M:
    """Find one resource by id or by name among those the caller may see.

    A name shared by several visible resources is a conflict: the caller
    must use the id.
    """
    base = select(model)
    if extra is not None:
        base = base.where(extra)
    if caller is not None and hasattr(model, "project_id"):
        base = scoped(base, model, caller)
    found = session.scalars(base.where(model.id == ref)).first()  # type: ignore[attr-defined]
    if found is not None:
        return found
    if not hasattr(model, "name"):
        raise NotFound(f"{kind} '{ref}' not found", field=field or kind)
    if caller is not None and hasattr(model, "project_id"):
        # Prefer the caller's own project when names repeat across projects.
        own = session.scalars(base.where(model.name == ref,  # type: ignore[attr-defined]
                                         model.project_id == caller.project_id)).all()  # type: ignore[attr-defined]
        if len(own) == 1:
            return own[0]
    matches = session.scalars(base.where(model.name == ref)).all()  # type: ignore[attr-defined]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise Conflict(f"{kind} name '{ref}' is ambiguous; use its id", field=field or kind)
    raise NotFound(f"{kind} '{ref}' not found", field=field or kind)


def ensure_unique_name(session: Session, model: Any, name: str, project_id: str, *, kind: str,
                       extra: Any = None) -> None:
    """Names are unique per project, so they can be used in place of ids."""
    query = select(model.id).where(model.name == name, model.project_id == project_id)
    if extra is not None:
        query = query.where(extra)
    if session.scalars(query).first() is not None:
        raise Conflict(f"a {kind} named '{name}' already exists", field="name")
