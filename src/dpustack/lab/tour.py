"""What every tour of `dpustack demo` is made of: flows, their failures and expectations, running a
list of flows in order, and the verdict of each."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any, Callable

from dpustack.client import Client
from dpustack.errors import DpustackError
from dpustack.instance_states import InstanceStatus
from dpustack.lab.state import LabState

OPERATION_TIMEOUT = 120.0
#: a flow: its name in the results, and the action that checks its outcome
Flow = tuple[str, Callable[[], None]]


class FlowFailed(Exception):
    """A flow saw something other than what it expected."""


@dataclass
class FlowResult:
    """The verdict of one flow: passed, failed, or skipped after an earlier failure."""

    name: str
    result: str  # "passed" | "failed" | "skipped"
    seconds: float = 0.0
    message: str = ""


def expect(condition: bool, message: str) -> None:
    """Fail the flow with ``message`` unless ``condition`` holds."""
    if not condition:
        raise FlowFailed(message)


class Tour(abc.ABC):
    """Flows on a running lab through the admin's API client, and the checks they share."""

    def __init__(self, admin: Client, lab: LabState):
        self.admin = admin
        self.lab = lab

    @abc.abstractmethod
    def flows(self) -> list[Flow]:
        """The tour's flows, in the order they build on each other."""

    def run(self, method: str, path: str, body: dict[str, Any] | None = None, *,
            expect: str = "succeeded") -> dict[str, Any]:
        """Start a long action and wait for it, as `--wait` does; fail the flow unless it ended ``expect``."""
        op = self.admin.request(method, path, json=body)
        final = self.admin.wait_operation(op["id"], timeout=OPERATION_TIMEOUT)
        if final["status"] != expect:
            raise FlowFailed(f"{final['action']} ended {final['status']} (expected {expect}): "
                             f"{final.get('error') or 'no error given'}")
        return final

    def server(self, name: str, status: InstanceStatus) -> dict[str, Any]:
        """The server called ``name``; fail the flow unless it is in ``status``."""
        server = self.admin.get(f"/v1/instances/{name}")
        expect(server["status"] == status, f"{name} is {server['status']}, expected {status}")
        return server


def run_flows(flows: list[Flow], report: Callable[[FlowResult], None]) -> list[FlowResult]:
    """Run flows in order; after the first failure the rest are skipped (they build on each other)."""
    results: list[FlowResult] = []
    for name, flow in flows:
        if results and results[-1].result != "passed":
            result = FlowResult(name, "skipped")
        else:
            began = time.monotonic()
            try:
                flow()
                result = FlowResult(name, "passed", time.monotonic() - began)
            except Exception as exc:  # any surprise is this flow's failure, reported, never a crash
                result = FlowResult(name, "failed", time.monotonic() - began, _message(exc))
        results.append(result)
        report(result)
    return results


def _message(exc: Exception) -> str:
    if isinstance(exc, DpustackError):
        field = f" (field {exc.field})" if exc.field else ""
        return f"{exc.message}{field}"
    if isinstance(exc, (FlowFailed, TimeoutError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
