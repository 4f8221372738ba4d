"""Stop, start, reboot, pause and unpause: one call to the node's agent (its BMC, or its hypervisor for a VM)."""

from __future__ import annotations

from typing import Any

from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.workflows.common import call_agent, instance_of, record_fault
from dpustack.instance_states import STATUS_AFTER


class PowerAction:
    """A single-step action whose success sets the instance's status."""

    rollback = False  # nothing to undo: the power call either happened or not

    def __init__(self, action: str, step: str, agent_action: str):
        self.action, self._step, self._agent_action = action, step, agent_action
        self._status_after = STATUS_AFTER[action]

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step(self._step, self._run)]

    def _run(self, ctx: StepContext) -> None:
        reboot_type = ctx.params.get("type")
        call_agent(ctx, lambda agent, instance: agent.power(instance.id, self._agent_action, reboot_type))
        with ctx.transaction() as session:
            instance = instance_of(session, ctx)
            instance.status, instance.fault = self._status_after, None

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        record_fault(ctx, step, message)


register(PowerAction("stop", "power_off", "stop"))
register(PowerAction("start", "power_on", "start"))
register(PowerAction("reboot", "reboot", "reboot"))
register(PowerAction("pause", "pause", "pause"))
register(PowerAction("unpause", "unpause", "unpause"))
