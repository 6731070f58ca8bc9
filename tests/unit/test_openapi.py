"""The published OpenAPI documents: what a generator turns into a good client.
(`make check-openapi` generates one with openapi-python-client and calls the app with it.)"""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from jobbridge.config import Settings
from jobbridge_api.main import create_app

OPERATION_ID = re.compile(r"^[a-z]+(_[a-z]+)*$")


def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    client = TestClient(create_app(Settings()))
    return client.get("/openapi.json").json(), client.get("/agent/openapi.json").json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_tenants_and_agents_each_have_a_document_of_their_own() -> None:
    public, agent = documents()

    assert public["paths"] and not any(path.startswith("/agent/") for path in public["paths"])
    assert agent["paths"] and all(path.startswith("/agent/") for path in agent["paths"])
    assert not any(name.startswith("Agent") for name in public["components"]["schemas"])
    for document in (public, agent):  # every schema referred to is there
        refs = set(re.findall(r'"#/components/schemas/(\w+)"', str(document).replace("'", '"')))
        assert refs <= set(document["components"]["schemas"])


def test_operation_ids_are_names_a_generator_keeps() -> None:
    public, agent = documents()

    ids = {op["operationId"] for document in (public, agent) for _, _, op in operations(document)}
    assert {"submit_job", "submit_jobs_batch", "list_jobs", "get_job", "cancel_job", "list_job_types", "get_health",
            "claim_job", "heartbeat_job", "complete_job", "fail_job", "release_job", "acknowledge_cancel"} == ids
    assert all(OPERATION_ID.match(i) for i in ids)


def test_every_operation_is_tagged_and_every_body_has_an_example() -> None:
    for document in documents():
        tags = {tag["name"] for tag in document["tags"]}
        for method, path, op in operations(document):
            assert op["tags"] and set(op["tags"]) <= tags, (method, path)
            if "requestBody" in op:
                name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert document["components"]["schemas"][name].get("examples"), (method, path)


def test_errors_are_documented_as_the_problem_json_the_api_sends() -> None:
    for document in documents():
        for method, path, op in operations(document):
            for status, response in op["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)
                    assert response["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
