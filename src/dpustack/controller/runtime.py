"""What the controller's parts share at run time: settings, database, agent access."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import httpx
from sqlalchemy.orm import Session, sessionmaker

from dpustack.controller.agent_client import AgentClient
from dpustack.controller.netbackend import NetworkBackend, NullBackend
from dpustack.controller.services.volumes import VolumeDirs
from dpustack.controller.settings import Settings
from dpustack.db.models import Node


@dataclass
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    # Tests route agent calls to in-process agents through this transport.
    agent_transport: httpx.BaseTransport | None = field(default=None)
    network: NetworkBackend = field(default_factory=NullBackend)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def agent(self, node: Node, *, timeout: float | None = None) -> AgentClient:
        """A client for the node's agent; `timeout` shortens the wait for quick queries."""
        return AgentClient(node.hostname, node.agent_url, self.settings.agent_credential,
                           timeout=timeout or self.settings.agent_timeout, transport=self.agent_transport)

    @property
    def volume_dirs(self) -> VolumeDirs:
        return VolumeDirs(self.settings.images_dir, self.settings.volumes_dir)
