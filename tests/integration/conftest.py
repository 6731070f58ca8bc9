"""Integration-tier fixtures: the real handlers, in this process, against moto server over HTTP.

Tables and queues come from template.yaml (jobbridge_local.resources) under a stack name of the
test's own, so tests sharing the session's moto server never see each other's data. A handler
sees the environment template.yaml gives its function, resolved for that stack, exactly as the
local stack would hand it.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import boto3
import pytest

from jobbridge import aws
from jobbridge.config import get_settings
from jobbridge.models import Route
from jobbridge.store import JobStore
from jobbridge_local.invoke import LambdaContext, load_handler
from jobbridge_local.resources import DUMMY_CREDENTIALS, LocalResources, create_resources
from jobbridge_local.template import LOCAL_REGION, FunctionSpec, LocalContext, Template, load_template

QUEUE_OF_ROUTE = {Route.LAMBDA: "PublicLambdaQueue", Route.BATCH: "PublicBatchQueue", Route.PRIVATE: "PrivateQueue"}


@lru_cache(maxsize=1)
def template() -> Template:
    return load_template()


@dataclass(frozen=True)
class Stack:
    """One copy of the template's resources in moto server."""

    name: str
    endpoint_url: str
    resources: LocalResources

    @property
    def context(self) -> LocalContext:
        return LocalContext(stack_name=self.name, endpoint_url=self.endpoint_url,
                            attributes=self.resources.attributes())

    @property
    def table_name(self) -> str:
        return self.resources.table("JobsTable").name

    @property
    def stream_arn(self) -> str:
        arn = self.resources.table("JobsTable").stream_arn
        assert arn, "JobsTable has no stream: template.yaml lost its StreamSpecification"
        return arn

    def queue_url(self, route: Route) -> str:
        return self.resources.queue(QUEUE_OF_ROUTE[route]).url

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=LOCAL_REGION, **DUMMY_CREDENTIALS)


def _new_stack(endpoint_url: str) -> Stack:
    name = f"it-{uuid.uuid4().hex[:8]}"
    context = LocalContext(stack_name=name, endpoint_url=endpoint_url)
    return Stack(name, endpoint_url, create_resources(endpoint_url, template=template(), context=context))


@pytest.fixture(scope="module")
def module_stack(moto_server) -> Stack:
    """Template resources shared by one test module (tests keep to their own jobs and tenants)."""
    return _new_stack(moto_server.endpoint_url)


@pytest.fixture
def fresh_stack(moto_server) -> Stack:
    """Template resources of this test alone: an empty table, stream and queues."""
    return _new_stack(moto_server.endpoint_url)


def reset_process_state() -> None:
    """Forget everything a warm Lambda container would keep between invocations."""
    get_settings.cache_clear()
    aws.reset_clients()
    from jobbridge_api import deps

    for cached in (deps._registry, deps._store, deps._dispatcher):
        cached.cache_clear()
    for module in list(sys.modules.values()):
        wiring = getattr(module, "_wiring", None)
        if getattr(module, "__name__", "").startswith("jobbridge_fn_") and hasattr(wiring, "cache_clear"):
            wiring.cache_clear()


@pytest.fixture(autouse=True)
def _cold_start() -> Iterator[None]:
    reset_process_state()
    yield
    reset_process_state()


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch, aws_endpoint_env: str) -> Callable[..., FunctionSpec]:
    """``function_env("api", stack, JOBBRIDGE_X="...")``: set the environment template.yaml gives
    that function (resolved for ``stack``), plus overrides, for this test; caches are dropped so
    the next invocation reads it."""

    def apply(function: str, stack: Stack, **overrides: str) -> FunctionSpec:
        spec = template().function_spec(function, stack.context)
        for name, value in {**spec.environment, **overrides}.items():
            monkeypatch.setenv(name, value)
        reset_process_state()
        return spec

    return apply


@pytest.fixture(scope="session")
def api_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    return load_handler("api", template())


@pytest.fixture(scope="session")
def bridge_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    return load_handler("bridge", template())


@pytest.fixture
def lambda_context() -> Callable[[FunctionSpec], LambdaContext]:
    return lambda spec: LambdaContext(spec)


@pytest.fixture
def stack_store() -> Callable[[Stack], JobStore]:
    """A JobStore on a stack's table over HTTP (its own client: independent of the handlers')."""
    return lambda stack: JobStore(stack.table_name, client=stack.client("dynamodb"))
