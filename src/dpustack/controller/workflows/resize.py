"""resize and resize_revert: a VM's node defines it again with its new flavor, or with its old one back.

The claims were made when the API accepted the resize (`services.resize`); these operations only call the
node and record the outcome. A resize that fails gives the instance its old flavor and status again and frees
the new claim (`back_to_old`); a revert that fails leaves it in VERIFY_RESIZE, both claims held, to confirm or
revert again. Either way the operation's error says why. When the node undid its own steps (its answer's step
log) there is nothing to undo there; when the call's outcome is not known (the node did not answer), the
undo asks the node for the flavor the VM should have. An undo that fails leaves the instance in ERROR with
a fault, its claims held: deleting it frees them all.
"""

from __future__ import annotations

from typing import Any

from dpustack.contract.instances import ResizeRequest
from dpustack.controller.agent_client import AgentCallFailed
from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.services import resize
from dpustack.controller.workflows.common import call_agent, instance_of, settle_failure
from dpustack.instance_states import STATUS_AFTER, InstanceStatus

#: ctx.data: whether the node's own undo of the failed call did not finish (its step log says undo_failed)
_NODE_UNDO_FAILED = "node_undo_failed"
#: ctx.data: whether the node undid the failed call itself, so the node has the flavor from before it
_NODE_UNDID = "node_undid"


def _on_node(ctx: StepContext, which: str) -> None:
    """Have the node define the VM with its `new` or its `old` flavor and placement."""
    with ctx.transaction() as session:
        new, old = resize.flavor_specs(instance_of(session, ctx))
    flavor, placement = new if which == "new" else old
    request = ResizeRequest.model_validate({"flavor": flavor.model_dump(), "numa_placement": placement})
    try:
        call_agent(ctx, lambda agent, instance: agent.resize(instance.id, request))
    except AgentCallFailed as exc:
        ctx.data[_NODE_UNDID] = True
        ctx.data[_NODE_UNDO_FAILED] = any(step.status == "undo_failed" for step in exc.substeps)
        raise
    ctx.detail["flavor"] = flavor.name


def _back_on_node(ctx: StepContext, which: str) -> None:
    """Undo of `_on_node`: nothing where the node undid the call itself, else the node is asked for `which`."""
    if ctx.data.pop(_NODE_UNDID, False):
        return
    _on_node(ctx, which)


def _verify(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        instance = instance_of(session, ctx)
        instance.status, instance.fault = STATUS_AFTER["resize"], None


def _finish_revert(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        resize.back_to_old(session, instance_of(session, ctx))


class Resize:
    action = "resize"
    rollback = True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("resize_on_node", lambda ctx: _on_node(ctx, "new"), lambda ctx: _back_on_node(ctx, "old")),
                Step("verify_resize", _verify)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """The old flavor again, the new claim freed; ERROR with a fault if the VM was not put back."""
        settle_failure(ctx, step, message, restore=resize.back_to_old,
                       node_undo_failed=bool(ctx.data.get(_NODE_UNDO_FAILED)))


class RevertResize:
    action = "resize_revert"
    rollback = True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("revert_on_node", lambda ctx: _on_node(ctx, "old"), lambda ctx: _back_on_node(ctx, "new")),
                Step("finish_revert", _finish_revert)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """VERIFY_RESIZE again, both claims held; ERROR with a fault if the VM was not put back."""
        settle_failure(ctx, step, message, status=InstanceStatus.VERIFY_RESIZE,
                       node_undo_failed=bool(ctx.data.get(_NODE_UNDO_FAILED)))


register(Resize())
register(RevertResize())
