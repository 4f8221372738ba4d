"""Operations: the record of every long action, step by step."""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.api.deps import CallerDep, ContextDep
from dpustack.api.schemas import OperationPublic
from dpustack.controller.orchestrator import Orchestrator
from dpustack.controller.context import ControllerContext
from dpustack.controller.services.common import find, scoped
from dpustack.db.models import Instance, Operation
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/operations", tags=["operations"])


def accept(context: ControllerContext, orchestrator: Orchestrator,
           submit: Callable[[Session], Operation]) -> OperationPublic:
    """Answer a change carried out by an operation (202): submit it in one transaction, then wake the workers."""
    with context.transaction() as session:
        operation = submit(session)
        session.flush()
        public = OperationPublic.model_validate(operation)
    orchestrator.wake()
    return public


@router.get("", response_model=list[OperationPublic], responses=error_responses(404, 409))
def list_operations(context: ContextDep, caller: CallerDep, instance: str | None = None,
                    limit: int = 100) -> list[OperationPublic]:
    with context.transaction() as session:
        query = scoped(select(Operation), Operation, caller)
        if instance:
            # Deleted instances keep their history, so look them up among all.
            target = find(session, Instance, instance, caller, kind="instance")
            query = query.where(Operation.instance_id == target.id)
        query = query.order_by(Operation.created_at.desc()).limit(max(1, min(limit, 1000)))
        return [OperationPublic.model_validate(op) for op in session.scalars(query)]


@router.get("/{operation_id}", response_model=OperationPublic)
def show_operation(operation_id: str, context: ContextDep, caller: CallerDep) -> OperationPublic:
    with context.transaction() as session:
        operation = find(session, Operation, operation_id, caller, kind="operation", field="operation")
        return OperationPublic.model_validate(operation)
