"""Operations: the record of every long action, step by step."""

from __future__ import annotations

from typing import Callable, TypeVar

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
Submitted, Answer = TypeVar("Submitted"), TypeVar("Answer")


def accept(context: ControllerContext, orchestrator: Orchestrator,
           submit: Callable[[Session], Operation]) -> OperationPublic:
    """Answer a change carried out by an operation (202): submit it in one transaction, then wake the workers."""
    return accept_as(context, orchestrator, submit, OperationPublic.model_validate)


def accept_as(context: ControllerContext, orchestrator: Orchestrator, submit: Callable[[Session], Submitted],
              public: Callable[[Submitted], Answer]) -> Answer:
    """Answer a change carried out by an operation (202) with what `submit` made (a new volume, say, which
    names its operation): submit in one transaction, then wake the workers."""
    with context.transaction() as session:
        made = submit(session)
        session.flush()
        answer = public(made)
    orchestrator.wake()
    return answer


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
