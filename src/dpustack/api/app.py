"""The controller's FastAPI application, built by a factory so tests can make their own.

It serves a controller assembled beforehand (`dpustack.controller.assembly`): setting one up is
not the HTTP layer's business.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from dpustack.api.routers import (flavors, identity, images, instances, networks, nodes, operations, pci,
                                  security_groups, volumes)
from dpustack.api.routers import snapshots, subnets
from dpustack.api.routers import accelerators, instance_metadata, keypairs
from dpustack.controller.assembly import Controller
from dpustack.errors import Conflict
from dpustack.web.http_errors import install_error_handlers
from dpustack.web.nul_characters import refuse_nul_characters

log = logging.getLogger(__name__)


def create_app(controller: Controller, *, run_workers: bool = True) -> FastAPI:
    """Serve an assembled controller (`dpustack.controller.assembly`): while the app runs, so do its
    operation workers (unless `run_workers` is false); on shutdown the controller is closed."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with controller.running(workers=run_workers):
            yield

    app = api_app(lifespan)
    app.state.context = controller.context
    app.state.orchestrator = controller.orchestrator
    return app


def api_app(lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    """The controller's routes and error answers, without a context: `create_app` adds one.

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
    app.include_router(snapshots.router, prefix="/v1")
    app.include_router(keypairs.router, prefix="/v1")
    app.include_router(instance_metadata.router, prefix="/v1")
    app.include_router(pci.v2, prefix="/v2")
    app.include_router(accelerators.router, prefix="/v1")
    app.include_router(accelerators.router)  # the seed's paths, as they are
    return app
