"""Dependencies of the routes, as ``Annotated`` types. Tests swap them through
``app.dependency_overrides``. Everything is built once per process, on first use.

They are ``async def`` although none of them awaits: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hand-off each, and a submit resolves six of them. None blocks (cached
objects, a claim read from the event or a token checked in memory; the first call's imports and
the key file's one read happen once per process), so they run on the event loop. In the thread
pool they made a warm POST /jobs cost about 35% more CPU (make bench, docs/PERFORMANCE.md).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request

from jobbridge.config import Settings, get_settings
from jobbridge.dispatch import Dispatcher
from jobbridge.registry import Registry, load_registry
from jobbridge.routing import LambdaWorker
from jobbridge.service import JobService
from jobbridge.store import JobStore

from .auth import AgentPrincipal, Principal, authenticate, authenticate_agent


async def settings_dep() -> Settings:
    return get_settings()


@lru_cache(maxsize=1)
def _registry(modules: tuple[str, ...]) -> Registry:
    return load_registry(modules)


async def registry_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> Registry:
    return _registry(settings.job_modules)


@lru_cache(maxsize=1)
def _store(table_name: str, retention_days: int) -> JobStore:
    return JobStore(table_name, retention_days=retention_days)


async def store_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> JobStore:
    return _store(settings.table_name, settings.retention_days)


async def service_dep(
    store: Annotated[JobStore, Depends(store_dep)], registry: Annotated[Registry, Depends(registry_dep)],
    settings: Annotated[Settings, Depends(settings_dep)],
) -> JobService:
    return JobService(store, registry, LambdaWorker(settings.worker_timeout_s, settings.worker_memory_mb))


@lru_cache(maxsize=1)
def _dispatcher(settings: Settings) -> Dispatcher:
    # Read-only here: the health check asks the queues for an attribute; the API never sends.
    return Dispatcher(settings.configured_queue_urls())


async def dispatcher_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> Dispatcher:
    return _dispatcher(settings)


async def principal_dep(request: Request, settings: Annotated[Settings, Depends(settings_dep)]) -> Principal:
    principal = authenticate(request, settings)
    request.state.tenant = principal.tenant
    return principal


async def agent_dep(request: Request, settings: Annotated[Settings, Depends(settings_dep)]) -> AgentPrincipal:
    return authenticate_agent(request, settings)


async def agent_lifecycle_dep(store: Annotated[JobStore, Depends(store_dep)],
                              registry: Annotated[Registry, Depends(registry_dep)]):
    """The agents' lifecycle: its writes are fenced to private jobs (JobStore's route fence)."""
    from jobbridge.lifecycle import JobLifecycle
    from jobbridge.models import Route

    return JobLifecycle(store.for_route(Route.PRIVATE), registry)


SettingsDep = Annotated[Settings, Depends(settings_dep)]
RegistryDep = Annotated[Registry, Depends(registry_dep)]
StoreDep = Annotated[JobStore, Depends(store_dep)]
ServiceDep = Annotated[JobService, Depends(service_dep)]
DispatcherDep = Annotated[Dispatcher, Depends(dispatcher_dep)]
PrincipalDep = Annotated[Principal, Depends(principal_dep)]
AgentDep = Annotated[AgentPrincipal, Depends(agent_dep)]


async def correlation_id(request: Request) -> str | None:
    return getattr(request.state, "correlation_id", None)


CorrelationDep = Annotated[str | None, Depends(correlation_id)]
