"""Assembles the app: routers, middleware, error handlers. Nothing here touches AWS at import."""

from __future__ import annotations

from fastapi import FastAPI

from jobbridge.config import Settings, get_settings

from . import problems
from .middleware import BodyLimit, Correlation
from .routes import agent, health, job_types, jobs


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
    app.include_router(agent.router)
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Correlation)
    return app


app = create_app()
