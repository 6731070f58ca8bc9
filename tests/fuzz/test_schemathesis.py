"""Schemathesis against the app's own OpenAPI, in process (ASGI transport, no network), backed by
moto in process: valid and invalid requests (generation modes positive + negative) to every
operation, then stateful sequences along the OpenAPI links (submit -> read -> cancel).

What must hold: no 5xx, ever; every 4xx is a problem body (application/problem+json with type,
title, status and detail, its status the response's) that shows no stack trace; every 2xx
matches the documented schema.

``make test`` runs a short bounded run; ``make fuzz`` a long one (JOBBRIDGE_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from jobbridge.config import Settings
from jobbridge_api import deps
from jobbridge_api.main import create_app

from fuzz_support import fuzz_examples, make_token

PROBLEM_FIELDS = ("type", "title", "status", "detail")
# The short run in `make test` repeats the same examples every time (no flakes in CI); the long run
# (`make fuzz`) explores afresh.
SHORT_RUN = fuzz_examples() < 100
# Frames of a Python traceback, or an exception repr, leaking into a response.
LEAK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|botocore|ClientError|"
                  r"/site-packages/|\bat 0x[0-9a-f]+>")


# pytest needs the operations at collection, so the app and its document are built at import: the
# app builds no AWS client until a request comes, and its settings (the tables and queues of this
# module's mock_aws) are handed to it by the ``api_schema`` fixture. schemathesis.pytest.from_fixture
# would defer the loading, but its lazy loader sets a node attribute pytest 9.2 no longer has.
_current: dict[str, Settings] = {}
app = create_app(Settings())
app.dependency_overrides[deps.settings_dep] = lambda: _current["settings"]
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=fuzz_examples())
# The agents' routes have a document of their own.
agent_schema = schemathesis.openapi.from_asgi("/agent/openapi.json", app)
agent_schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                      max_examples=fuzz_examples())


def _clear_api_caches() -> None:
    for cached in (deps._registry, deps._store, deps._dispatcher):
        cached.cache_clear()


@pytest.fixture(scope="module")
def api_schema(fuzz_settings: Settings) -> Any:
    _clear_api_caches()
    _current["settings"] = fuzz_settings
    yield schema
    _current.clear()
    _clear_api_caches()


@pytest.fixture(scope="module")
def tenant_headers(signing_key: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(signing_key, tenant='fuzz')}"}


@pytest.fixture(scope="module")
def agent_headers(signing_key: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(signing_key, audience='jobbridge-agent', agent_id='fuzz-agent')}"}


def problem_bodies(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx is application/problem+json with the RFC 9457 members, its own status, and no leak."""
    text = response.text if hasattr(response, "text") else response.content.decode("utf-8", "replace")
    if LEAK.search(text):
        raise AssertionError(f"the response shows internals: {text[:500]}")
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/problem+json"), f"{response.status_code} as {content_type!r}: {text[:300]}"
    body = json.loads(text)
    missing = [f for f in PROBLEM_FIELDS if not body.get(f) and body.get(f) != 0]
    assert not missing, f"problem body without {missing}: {body}"
    assert body["status"] == response.status_code, body
    return True


CHECKS = [not_a_server_error, response_schema_conformance]


def _headers_for(case: Any, tenant: dict[str, str], agent: dict[str, str]) -> dict[str, str]:
    # A generated Authorization header (a negative case) is kept: it tests the auth layer itself.
    if case.headers and any(k.lower() == "authorization" for k in case.headers):
        return {}
    return dict(agent if case.path.startswith("/agent/") else tenant)  # a copy: the call adds to it


def _known_type(case: Any, every: int = 2) -> None:
    """Random job types are all unknown (422); name a registered one in some submits so that jobs
    get made, read and cancelled too. The rest of the body stays as generated."""
    if case.method.upper() == "POST" and case.path == "/jobs" and isinstance(case.body, dict):
        if every == 1 or hash(json.dumps(case.body, sort_keys=True, default=str)) % every == 0:
            case.body["type"] = "echo"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=fuzz_examples(), derandomize=SHORT_RUN)
def test_every_operation_answers_without_5xx_and_with_problem_bodies(case, api_schema, tenant_headers, agent_headers):
    _known_type(case)
    case.call_and_validate(headers=_headers_for(case, tenant_headers, agent_headers), checks=CHECKS,
                           additional_checks=[problem_bodies])


@agent_schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=fuzz_examples(), derandomize=SHORT_RUN)
def test_every_agent_operation_answers_without_5xx_and_with_problem_bodies(case, api_schema, tenant_headers,
                                                                           agent_headers):
    case.call_and_validate(headers=_headers_for(case, tenant_headers, agent_headers), checks=CHECKS,
                           additional_checks=[problem_bodies])


def test_stateful_submit_read_cancel(api_schema, tenant_headers, agent_headers):
    seen: set[tuple[str, str, int]] = set()

    class Workflow(api_schema.as_state_machine()):
        def before_call(self, case):
            _known_type(case, every=1)

        def get_call_kwargs(self, case):
            return {"headers": _headers_for(case, tenant_headers, agent_headers)}

        def after_call(self, response, case):
            seen.add((case.method.upper(), case.path, response.status_code))

        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, checks=CHECKS, additional_checks=[problem_bodies],
                                   headers=kwargs.get("headers"))

    Workflow.run(settings=settings(max_examples=max(20, fuzz_examples()), stateful_step_count=6, deadline=None,
                                   derandomize=SHORT_RUN, suppress_health_check=list(HealthCheck)))
    # The links were followed: a job the fuzzer submitted was read and cancelled by its id.
    assert ("POST", "/jobs", 202) in seen
    assert ("GET", "/jobs/{job_id}", 200) in seen, sorted(seen)
    assert any(m == "POST" and p == "/jobs/{job_id}/cancel" and code in (200, 409) for m, p, code in seen), sorted(seen)


def test_the_schema_links_submit_to_read_and_cancel():
    links = app.openapi()["paths"]["/jobs"]["post"]["responses"]["202"]["links"]
    assert {name: link["operationId"] for name, link in links.items()} == {"GetJob": "get_job", "CancelJob": "cancel_job"}
    operations = {op["operationId"] for ops in app.openapi()["paths"].values() for op in ops.values()}
    assert {"get_job", "cancel_job"} <= operations


def test_the_problem_check_catches_a_bare_4xx():
    """The custom check is not vacuous: a plain-text 404 and a body without detail both fail it."""

    class Fake:
        def __init__(self, status: int, body: str, content_type: str) -> None:
            self.status_code, self.text, self.headers = status, body, {"content-type": [content_type]}

    with pytest.raises(AssertionError):
        problem_bodies(None, Fake(404, "Not Found", "text/plain"), None)
    with pytest.raises(AssertionError):
        problem_bodies(None, Fake(422, json.dumps({"type": "t", "title": "x", "status": 422}), "application/problem+json"), None)
    with pytest.raises(AssertionError):
        problem_bodies(None, Fake(500, 'Traceback (most recent call last):\n  File "x.py", line 1', "text/plain"), None)
    assert problem_bodies(None, Fake(404, json.dumps({"type": "t", "title": "x", "status": 404, "detail": "d"}),
                                     "application/problem+json"), None)
