"""The agent's FastAPI app (docs/api.md, "Agent API")."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import Depends, FastAPI

from dpustack.agent.config import AgentConfig
from dpustack.agent.hardware import DriverSet
from dpustack.agent.routes import (bmc, console, credentials, functions, instances, live_migration, node, pci,
                                   switch)
from dpustack.agent.routes.deps import require_token
from dpustack.agent.service import AgentService
from dpustack.web.http_errors import install_error_handlers
from dpustack.web.nul_characters import refuse_nul_characters


def create_app(config: AgentConfig, *, drivers: DriverSet | None = None,
               start_background: bool = True) -> FastAPI:
    """Build the agent app; starting it reconciles once, then (optionally) runs the loops."""
    service = AgentService(config, drivers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(service.start, background=start_background)
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="dpustack agent", version="0.1.0", lifespan=lifespan,
                  dependencies=[Depends(refuse_nul_characters)])
    app.state.service = service
    install_error_handlers(app)

    @app.get("/healthz", tags=["node"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (node, credentials, instances, live_migration, console, functions, switch, bmc, pci):
        app.include_router(module.router, dependencies=[Depends(require_token)])
    app.include_router(console.stream_router)  # authenticates its handshakes itself
    return app
