"""set_password: a running VM's admin password, set in its guest now by its node's agent, through the guest's
QEMU guest agent.

The password is not in the operation: the API stored it, sealed, on the instance (where the metadata service
serves it from) when it accepted the action, and the step opens it there and sends it to the agent in the
request body, over the agent's TLS API. A failure leaves the instance as it was (ACTIVE, no fault): the
operation's error says why, and the VM still takes the stored password at its next boot.
"""

from __future__ import annotations

from typing import Any

from dpustack.contract.instances import PasswordRequest
from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.services import instance_metadata
from dpustack.controller.workflows.common import call_agent, instance_of

class SetPassword:
    action = "set_password"
    rollback = False  # nothing to undo: the guest took the password or not

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("set_password", _set_password)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """Nothing: the VM runs on, unchanged; the operation carries the error."""


def _set_password(ctx: StepContext) -> None:
    with ctx.transaction() as session:
        password = instance_metadata.open_admin_pass(instance_of(session, ctx), ctx.context.settings.secret_key_file)
    request = PasswordRequest.model_validate({"user": ctx.params["user"], "password": password})
    call_agent(ctx, lambda agent, instance: agent.set_password(instance.id, request))
    ctx.detail["user"] = request.user


register(SetPassword())
