"""The agent's side of its node's credentials (docs/security.md).

* its report token, presented to the controller (plain: it must present it);
* the SHA-256 digests of the controller credentials it accepts: the current one, one being rotated in
  (``pending``: accepted, and promoted to current the first time the controller uses it) and, for a short
  grace period after a promotion, the previous one, so requests already on their way still pass.

agent.toml holds the enrolled pair; rotations are kept in ``<state_dir>/credentials.json`` (0600, written
atomically) and win over agent.toml until agent.toml itself changes (a new enrolment).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Generator

import httpx

from dpustack.secrets import digest

log = logging.getLogger(__name__)

GRACE_SECONDS = 120.0


class AgentCredentials:
    """What the agent presents to the controller, and what it accepts from it."""

    def __init__(self, path: Path, report_token: str, controller_digest: str, *, grace: float = GRACE_SECONDS):
        self._path = path
        self._grace = grace
        self._lock = threading.Lock()
        self._origin = digest(report_token + "|" + controller_digest)  # which agent.toml pair the file follows
        self._state: dict[str, Any] = {"origin": self._origin, "report_token": report_token,
                                       "current": controller_digest.lower(), "pending": None,
                                       "previous": None, "previous_until": 0.0}
        saved = self._load()
        if saved is not None and saved.get("origin") == self._origin:
            self._state.update(saved)

    def report_token(self) -> str:
        with self._lock:
            return str(self._state["report_token"])

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is a controller credential this agent accepts (constant-time compare).

        Using the pending credential promotes it: from then on the old one passes only for the grace period.
        """
        seen = digest(presented)
        with self._lock:
            state = self._state
            if state["pending"] and hmac.compare_digest(seen, state["pending"]):
                state.update(previous=state["current"], previous_until=time.time() + self._grace,
                             current=state["pending"], pending=None)
                self._save()
                log.info("the controller uses its new credential: rotation complete")
                return True
            if hmac.compare_digest(seen, state["current"]):
                return True
            return bool(state["previous"] and time.time() < state["previous_until"]
                        and hmac.compare_digest(seen, state["previous"]))

    def rotate(self, report_token: str, controller_digest: str) -> None:
        """Take a new pair: report with the new token at once, accept the new credential beside the current."""
        with self._lock:
            self._state.update(report_token=report_token, pending=controller_digest.lower())
            self._save()
        log.info("credentials rotated: reporting with the new token, accepting the controller's new credential")

    def _load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s (%s): using agent.toml's credentials", self._path, exc)
            return None

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self._state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._path)
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class ReportTokenAuth(httpx.Auth):
    """Bearer auth with the agent's current report token, read at every request (rotations apply at once)."""

    def __init__(self, credentials: AgentCredentials):
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._credentials.report_token()}"
        yield request
