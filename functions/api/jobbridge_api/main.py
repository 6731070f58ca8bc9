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
    install_documents(app, later)
    return app


AGENT_PREFIX = "/agent/"
AGENT_DOCUMENT = "/agent/openapi.json"


def install_documents(app: FastAPI, later: "LaterRouters") -> None:
    """Two OpenAPI documents: ``/openapi.json`` for tenants (what a generated client should offer)
    and ``/agent/openapi.json`` for on-prem agents (in AWS behind the agents' IAM authorization, like
    every /agent route). Both are cut from the one document FastAPI builds, each path to its own,
    with the schemas its paths use; built once, with every router included."""
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse

    documents: dict[bool, dict[str, Any]] = {}

    def document(agent: bool) -> dict[str, Any]:
        if not documents:
            later.include()
            full = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for side in (False, True):
                documents[side] = _cut(full, agent=side)
        return documents[agent]

    app.openapi = lambda: document(agent=False)  # the documented way to customise it

    async def agent_document() -> JSONResponse:
        return JSONResponse(document(agent=True))

    app.add_api_route(AGENT_DOCUMENT, agent_document, include_in_schema=False)


def _cut(full: dict[str, Any], *, agent: bool) -> dict[str, Any]:
    paths = {path: ops for path, ops in full["paths"].items() if path.startswith(AGENT_PREFIX) == agent}
    schemas = full.get("components", {}).get("schemas", {})
    used: set[str] = set()
    pending = [paths]
    while pending:  # every schema a path refers to, and every schema those refer to
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in used:
                    used.add(name)
                    pending.append(schemas.get(name))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    for ops in paths.values():
        for op in ops.values():
            _problems_as_problem_json(op)
    info = dict(full["info"])
    if agent:
        info.update(title="jobbridge agent API", summary="The routes an on-prem agent reports through")
    return {**full, "info": info, "paths": paths, "tags": TAGS_AGENT if agent else TAGS,
            "components": {**full.get("components", {}), "schemas": {k: v for k, v in schemas.items() if k in used}}}


def _problems_as_problem_json(operation: dict[str, Any]) -> None:
    """Document every 4xx/5xx body as the API sends it, ``application/problem+json`` with the
    Problem schema (FastAPI files a response model under ``application/json``)."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {})
        if status[:1] in "45" and "application/json" in content and problems.MEDIA_TYPE in content:
            content[problems.MEDIA_TYPE] = content.pop("application/json")


TAGS = [
    {"name": "jobs", "description": "Submit, read, list and cancel your jobs"},
    {"name": "job types", "description": "What you may submit"},
    {"name": "health", "description": "Whether the API's dependencies are reachable"},
]
TAGS_AGENT = [{"name": "agent", "description": "Claim private jobs, heartbeat, report their end"}]


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
