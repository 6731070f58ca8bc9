"""Assembles the app: routers, middleware, error handlers. Nothing here touches AWS at import."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from fastapi import FastAPI

from jobbridge.config import Settings, get_settings

from . import problems
from .middleware import ASGIApp, BodyLimit, Correlation, Receive, Scope, Send
from .routes import jobs


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
    later = LaterRouters(app, ("job_types", "health", "agent"))
    problems.install(app)
    app.add_middleware(IncludeOnFirstUse, routers=later)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Correlation)
    openapi = app.openapi

    def openapi_with_every_router() -> dict[str, Any]:
        later.include()
        return openapi()

    app.openapi = openapi_with_every_router  # the documented way to customise it
    return app


class LaterRouters:
    """The routers other than /jobs, included in the app on first use, all at once and in order.

    A cold start pays for every route FastAPI builds (a pydantic field for every parameter, body,
    response and documented error) and for what their modules import. /jobs is the hot path;
    /job-types, /health and the agents' /agent routes are called far less often, by other
    callers. So a Lambda instance that serves only /jobs never builds them (make bench measured
    them at about 5% of the API's cold start). The first request outside /jobs, or the first
    OpenAPI document, includes them in their original order, after /jobs: the routes and the
    OpenAPI document are the same as when they were included at import.
    """

    hot_prefix = "/jobs"

    def __init__(self, app: FastAPI, modules: tuple[str, ...]) -> None:
        self._app = app
        self._modules = modules
        self._lock = threading.Lock()
        self.included = False

    def include(self) -> None:
        if self.included:
            return
        with self._lock:
            if not self.included:
                for name in self._modules:
                    module = importlib.import_module(f"{__package__}.routes.{name}")
                    self._app.include_router(module.router)
                self.included = True

    def needed_for(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        return not (path == self.hot_prefix or path.startswith((self.hot_prefix + "/", self.hot_prefix + ":")))


class IncludeOnFirstUse:
    """Includes ``routers`` before the first request they may serve is routed."""

    def __init__(self, app: ASGIApp, routers: LaterRouters) -> None:
        self.app = app
        self.routers = routers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.routers.included and scope["type"] == "http" and self.routers.needed_for(scope):
            self.routers.include()
        await self.app(scope, receive, send)


app = create_app()
