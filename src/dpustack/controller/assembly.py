"""Assembling the controller from its settings, before anything serves it.

`assemble_controller` migrates the database, chooses the network and volume
backends, bootstraps the admin project and makes the controller's secret key; the
`Controller` it returns holds the context the services share, the
orchestrator that runs operations and the storage reconcile that keeps attached
volumes served. The HTTP layer (`dpustack.api.app`) is handed one and only
serves it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import httpx
from sqlalchemy import Engine

from dpustack import secrets
import dpustack.controller.workflows  # noqa: F401  (registers the workflows the orchestrator runs)
from dpustack.controller.netbackend import NetworkBackend, NullBackend
from dpustack.controller.context import ControllerContext
from dpustack.controller.orchestrator import Orchestrator
from dpustack.controller.services.identity import bootstrap_admin
from dpustack.controller.settings import Settings
from dpustack.controller.storage_reconciler import StorageReconciler
from dpustack.controller.volumebackend import volume_backend
from dpustack.db.session import make_engine, make_session_factory, migrate


@dataclass(frozen=True)
class Controller:
    """An assembled controller: the context its services share (settings, database sessions, agent
    access, network and volume backends), the orchestrator that runs its operations, the storage
    reconcile, and the database engine."""

    context: ControllerContext
    orchestrator: Orchestrator
    storage_reconciler: StorageReconciler
    engine: Engine

    @contextmanager
    def running(self, *, workers: bool = True) -> Iterator[None]:
        """While inside, the operation workers and the storage reconcile run (unless `workers` is
        false); on leaving, stop them, close the network backend and release the database engine's
        connections."""
        if workers:
            self.orchestrator.start()
            self.storage_reconciler.start()
        try:
            yield
        finally:
            if workers:
                self.storage_reconciler.stop()
                self.orchestrator.stop()
            self.context.network.close()
            self.engine.dispose()


def network_backend(settings: Settings) -> NetworkBackend:
    """OVN when a northbound database is configured, otherwise the database-only backend."""
    if settings.ovn_nb:
        from dpustack.controller.netbackend.ovn import OvnBackend

        return OvnBackend(settings.ovn_nb, timeout=settings.ovn_timeout)
    return NullBackend()


def assemble_controller(settings: Settings, *, agent_transport: httpx.BaseTransport | None = None) -> Controller:
    """Prepare the home directory, migrate the database, bootstrap the admin (its token in
    ``home/admin-token`` on first start), make the secret key (mode 0600) and build the orchestrator.

    `agent_transport` routes agent calls elsewhere than the network (tests: to in-process agents).
    """
    settings = settings.prepare()
    engine = make_engine(settings.database_url)
    migrate(engine)
    context = ControllerContext(settings, make_session_factory(engine), agent_transport, network_backend(settings),
                      volume_backend=volume_backend(settings))
    with context.transaction() as session:
        bootstrap_admin(session, settings.home / "admin-token")
    secrets.ensure_key(settings.secret_key_file)  # the controller's secret key (instances' admin passwords)
    return Controller(context, Orchestrator(context, workers=settings.workers),
                      StorageReconciler(context, interval=settings.storage_reconcile_interval), engine)
