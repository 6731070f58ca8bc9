"""Fixtures shared by every test tier.

moto server runs as a child process on a free loopback port (jobbridge_local.motoserver), so
integration tests talk to it over HTTP exactly as the local stack does. Add fixtures below;
keep the ones here working for the tests that use them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from jobbridge_local.motoserver import MotoServer, free_port as _free_port


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nothing listens on."""
    return _free_port()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the whole session (state accumulates: create what you need
    idempotently, use unique keys)."""
    server = MotoServer(port=_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_moto_server() -> Iterator[MotoServer]:
    """A moto server of this test's own (empty state), for tests that read a whole stream or
    count messages. Starting one takes about half a second."""
    server = MotoServer(port=_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_endpoint_env(monkeypatch: pytest.MonkeyPatch, moto_server: MotoServer) -> str:
    """Point boto3 in this process at the session's moto server, as the local stack does for
    the functions (AWS_ENDPOINT_URL, dummy credentials, us-east-1). Returns the endpoint URL."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_server.endpoint_url


# --- template.yaml's resources and functions, with parameter overrides -----------------------------


@dataclass(frozen=True)
class TemplateStack:
    """template.yaml's tables and queues in moto server under a stack name of one test's own, with
    template parameters overridden as ``jobbridge local run --parameter-overrides`` would, and its
    functions runnable in this process (``function(name).invoke(event)``: the environment the
    template gives that function, set for the call)."""

    name: str
    endpoint_url: str
    parameters: dict[str, str]
    resources: Any  # jobbridge_local.resources.LocalResources
    template: Any  # jobbridge_local.template.Template

    @property
    def context(self) -> Any:
        from jobbridge_local.template import LocalContext

        return LocalContext(stack_name=self.name, endpoint_url=self.endpoint_url,
                            attributes=self.resources.attributes(), parameters=self.parameters)

    @property
    def table_name(self) -> str:
        return self.resources.table("JobsTable").name

    def queue_url(self, logical_id: str) -> str:
        return self.resources.queue(logical_id).url

    def client(self, service: str) -> Any:
        from jobbridge_local.resources import client

        return client(service, self.endpoint_url, "us-east-1")

    def function(self, name: str) -> Any:
        from jobbridge_local.invoke import LocalFunction

        return LocalFunction(self.template.function_spec(name, self.context), self.endpoint_url)

    def event_sources(self, function: str, event_type: str) -> list[Any]:
        return self.template.event_sources(function, event_type, self.context)


def forget_warm_state() -> None:
    """Drop what warm handler modules keep between invocations (settings, boto3 clients, and every
    ``lru_cache``d wiring function of a ``jobbridge_fn_*`` module), so the next invocation is wired
    from the environment it gets."""
    import sys

    from jobbridge import aws
    from jobbridge.config import get_settings

    get_settings.cache_clear()
    aws.reset_clients()
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("jobbridge_fn_"):
            for value in list(vars(module).values()):
                if hasattr(value, "cache_clear") and getattr(value, "__module__", None) == name:
                    value.cache_clear()


@pytest.fixture
def template_stack(moto_server: MotoServer) -> Iterator[Callable[..., TemplateStack]]:
    """``template_stack(PublicLambdaVisibilityTimeout=1, ...)``: a fresh copy of template.yaml's
    resources in the session's moto server (see TemplateStack). Warm handler state is dropped
    before and after the test."""
    from jobbridge_local.resources import create_resources
    from jobbridge_local.template import LocalContext, load_template

    template = load_template()

    def make(**parameters: Any) -> TemplateStack:
        name = f"t-{uuid.uuid4().hex[:8]}"
        values = {key: str(value) for key, value in parameters.items()}
        context = LocalContext(stack_name=name, endpoint_url=moto_server.endpoint_url, parameters=values)
        resources = create_resources(moto_server.endpoint_url, template=template, context=context)
        return TemplateStack(name, moto_server.endpoint_url, values, resources, template)

    forget_warm_state()
    yield make
    forget_warm_state()
