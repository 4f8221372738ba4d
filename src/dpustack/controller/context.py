"""What the controller's parts share at run time: settings, database, agent access, network and volume backends."""

from __future__ import annotations

import ssl
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

import httpx
from sqlalchemy.orm import Session, sessionmaker

from dpustack.controller.agent_client import AgentClient
from dpustack.controller.netbackend import NetworkBackend, NullBackend
from dpustack.controller.services import node_credentials
from dpustack.controller.settings import Settings
from dpustack.controller.volumebackend import VolumeBackend
from dpustack.db.models import Node
from dpustack.tls import client_context


@dataclass
class ControllerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    # Tests route agent calls to in-process agents through this transport.
    agent_transport: httpx.BaseTransport | None = field(default=None)
    network: NetworkBackend = field(default_factory=NullBackend)
    volume_backend: VolumeBackend = field(kw_only=True)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def agent(self, node: Node, *, timeout: float | None = None, credential: str | None = None) -> AgentClient:
        """A client for the node's agent, presenting the controller's current credential for that node
        (or `credential`); `timeout` shortens the wait for quick queries."""
        if credential is None:
            credential = node_credentials.current(node, self.settings.secret_key_file)
        return AgentClient(node.hostname, node.agent_url, credential, timeout=timeout or self.settings.agent_timeout,
                           verify=self._agent_tls, insecure=self.settings.insecure, transport=self.agent_transport)

    @cached_property
    def _agent_tls(self) -> ssl.SSLContext:
        return client_context(self.settings.agent_ca, field="DPUSTACK_AGENT_CA")
