"""Assembles the app: routers, middleware, error handlers. Nothing here touches AWS at import."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI

from jobbridge.config import Settings, get_settings

from . import problems
from .middleware import ASGIApp, BodyLimit, Correlation, Receive, Scope, Send
from .routes import health, job_types, jobs


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="jobbridge",
        version="0.1.0",
        summary="One HTTPS API for cold work across AWS Lambda, AWS Batch and on-prem agents",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.include_router(jobs.router)
    app.include_router(job_types.router)
    app.include_router(health.router)
    agent_routes = AgentRoutes(app)
    problems.install(app)
    app.add_middleware(IncludeOnFirstUse, routes=agent_routes)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Correlation)
    openapi = app.openapi

    def openapi_with_agent_routes() -> dict[str, Any]:
        agent_routes.include()
        return openapi()

    app.openapi = openapi_with_agent_routes  # the documented way to customise it
    return app


class AgentRoutes:
    """The /agent routes, included in the app on first use.

    Only on-prem agents call them, and building them (FastAPI makes a pydantic field for every
    parameter, body, response and documented error of every route, and the module imports the
    lifecycle) costs about 5% of the API's cold start (make bench). So a Lambda instance serving
    tenants never builds them; the first request under /agent, or the first OpenAPI document,
    includes them, after every other router as before.
    """

    prefix = "/agent"

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.included = False

    def include(self) -> None:
        if self.included:
            return
        with self._lock:
            if not self.included:
                from .routes import agent

                self._app.include_router(agent.router)
                self.included = True


class IncludeOnFirstUse:
    """Includes ``routes`` before the first request whose path is under their prefix is routed."""

    def __init__(self, app: ASGIApp, routes: AgentRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # "in", not startswith: a root_path (a named API Gateway stage) may come first.
        if not self.routes.included and self.routes.prefix in scope.get("path", ""):
            self.routes.include()
        await self.app(scope, receive, send)


app = create_app()
