"""Port QoS: new limits on what a port's instance sends, in two steps.

`set_limits` records the limits and states them to the network backend (OVN's QoS row carries
`bps`) in one transaction; `apply_on_node` then has the agent of the node the port is bound to
apply a changed `pps` (an OVS meter it re-applies on every reconcile pass), with no transaction
open. An unbound port keeps `pps` for its next plug. If the backend or the agent refuses, the
undo of `set_limits` puts the old limits back, so the port is as it was, and the operation's
error says who refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dpustack.controller.orchestrator import Step, StepContext, register
from dpustack.controller.services import networks
from dpustack.db.models import Node
from dpustack.errors import DpustackError, DriverError


def _set_limits(ctx: StepContext) -> None:
    """Record and state the new limits, keeping the old ones for the undo (saved with the change,
    so a resumed step does not take its own limits for the old ones)."""
    with ctx.transaction() as session:
        port = networks.lock_port(session, ctx.params["port_id"])
        old = ctx.data.get("old_limits") or {"bps": port.qos_bps, "pps": port.qos_pps}
        networks.state_limits(ctx.context.network, port, bps=ctx.params["bps"], pps=ctx.params["pps"])
        ctx.data["old_limits"] = old  # only once the backend took the new limits: nothing to undo before
    ctx.detail["old_limits"] = old


def _put_back(ctx: StepContext) -> None:
    """Record and state the old limits again; nothing if the new ones were never taken."""
    old = ctx.data.get("old_limits")
    if old is None:
        return
    with ctx.transaction() as session:
        port = networks.lock_port(session, ctx.params["port_id"])
        networks.state_limits(ctx.context.network, port, bps=old["bps"], pps=old["pps"])


def _apply_on_node(ctx: StepContext) -> None:
    """Have the agent of the port's node apply its packet-rate limit, if it changed and the port is
    bound; DriverError says why it was not applied (an agent refusing keeps its old limit)."""
    port_id, pps = ctx.params["port_id"], ctx.params["pps"]
    with ctx.transaction() as session:
        host = networks.lock_port(session, port_id).binding_host_id
        node = session.scalars(select(Node).where(Node.hostname == host)).one_or_none() if host else None
    if not host or pps == ctx.data["old_limits"]["pps"]:
        ctx.detail["skipped"] = ("the port is not bound: it is plugged with its packet rate" if not host
                                 else "the packet rate did not change")
        return
    ctx.detail["node"] = host
    where = f"port {port_id} is plugged on node {host}"
    if node is None or not node.agent_url:
        raise DriverError(f"{where}, whose agent cannot be reached: the packet-rate limit was not changed")
    with ctx.context.agent(node) as agent:
        try:
            agent.set_port_qos(port_id, pps)
        except DpustackError as exc:
            raise DriverError(f"{where}, whose agent could not apply the packet-rate limit, so no limit "
                              f"was changed: {exc.message}") from exc


class SetPortQos:
    """Replace a port's limits (None: unlimited); undone as a whole if the backend or the agent refuses."""

    action, rollback = networks.QOS_ACTION, True

    def steps(self, params: dict[str, Any]) -> list[Step]:
        return [Step("set_limits", _set_limits, _put_back),
                Step("apply_on_node", _apply_on_node)]

    def on_failure(self, ctx: StepContext, step: str, message: str) -> None:
        """Nothing beyond the operation's own error: the port has its old limits back, and no
        instance is at fault."""


register(SetPortQos())
