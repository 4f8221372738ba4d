"""The controller's FastAPI application, built by a factory so tests can make their own."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import AsyncIterator, Callable

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

import dpustack.controller.workflows  # noqa: F401  (registers the workflows)
from dpustack.api.routers import (flavors, identity, images, instances, networks, nodes, operations, pci,
                                  security_groups, volumes)
from dpustack.api.routers import subnets
from dpustack.api.routers import keypairs, metadata
from dpustack.controller.netbackend import NetworkBackend, NullBackend
from dpustack.controller.orchestrator import Orchestrator
from dpustack.controller.runtime import Runtime
from dpustack.controller.services.identity import bootstrap_admin
from dpustack.controller.services.metadata import ensure_key
from dpustack.controller.settings import Settings
from dpustack.controller.volumebackend import volume_backend
from dpustack.db.session import make_engine, make_session_factory, migrate
from dpustack.errors import Conflict, install_error_handlers
from dpustack.inputs import refuse_nul_characters

log = logging.getLogger(__name__)


def network_backend(settings: Settings) -> NetworkBackend:
    """OVN when a northbound database is configured, otherwise the database-only backend."""
    if settings.ovn_nb:
        from dpustack.controller.netbackend.ovn import OvnBackend

        return OvnBackend(settings.ovn_nb, timeout=settings.ovn_timeout)
    return NullBackend()


def create_app(settings: Settings | None = None, *, agent_transport: httpx.BaseTransport | None = None,
               run_workers: bool = True) -> FastAPI:
    """Build the controller: migrate the database, bootstrap the admin, start the workers on startup."""
    settings = (settings or Settings.from_env()).prepare()
    engine = make_engine(settings.database_url)
    migrate(engine)
    runtime = Runtime(settings, make_session_factory(engine), agent_transport, network_backend(settings),
                      volume_backend=volume_backend(settings))
    with runtime.transaction() as session:
        bootstrap_admin(session, settings.home / "admin-token")
    ensure_key(settings.home)  # the controller's secret key (instances' admin passwords), mode 0600
    orchestrator = Orchestrator(runtime, workers=settings.workers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if run_workers:
            orchestrator.start()
        try:
            yield
        finally:
            if run_workers:
                orchestrator.stop()
            runtime.network.close()
            engine.dispose()

    app = api_app(lifespan)
    app.state.runtime = runtime
    app.state.orchestrator = orchestrator
    return app


def api_app(lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    """The controller's routes and error answers, without a runtime: `create_app` adds one.

    On its own it serves only its OpenAPI document (tests read the schema from it).
    """
    app = FastAPI(title="dpustack controller", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  dependencies=[Depends(refuse_nul_characters)],
                  description="Control plane for DPU-equipped clouds. Every endpoint but /healthz "
                              "needs `Authorization: Bearer <token>`.")
    install_error_handlers(app)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        # Two requests raced for the same name or address; the loser retries.
        log.info("integrity error answered as conflict: %s", exc.orig)
        error = Conflict("the change conflicts with one made at the same time; try again")
        return JSONResponse(error.to_dict(), status_code=409)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (identity, nodes, flavors, images, networks, security_groups, volumes, instances, operations, pci):
        app.include_router(module.router, prefix="/v1")
    app.include_router(subnets.router, prefix="/v1")
    app.include_router(keypairs.router, prefix="/v1")
    app.include_router(metadata.router, prefix="/v1")
    app.include_router(pci.v2, prefix="/v2")
    return app
