"""POST /jobs:batch: up to 25 jobs in one request, each with its own result (moto in process)."""

from __future__ import annotations

from typing import Any

import pytest

from jobbridge.errors import DependencyUnavailable
from jobbridge.store import JobStore
# The app and its fixtures are test_api's.
from test_api import (app, auth, client, items, make_token, public_key_file, settings,  # noqa: F401 (fixtures)
                      signing_key)


def test_each_item_gets_its_own_result_in_order(client, auth, items) -> None:  # noqa: F811
    jobs: list[dict[str, Any]] = [
        {"type": "echo", "params": {"n": 1}},
        {"type": "echo", "priority": 500},
        {"type": "no_such_type"},
        {"type": "transcode", "params": {"resolution": "8K"}},
        {"type": "transcode", "params": {"video_id": "v1", "resolution": "8K"}, "idempotency_key": "v1-8k"},
        {"type": "transcode", "params": {"video_id": "v1", "resolution": "8K"}, "idempotency_key": "v1-8k"},
        {"type": "echo", "idempotency_key": "has space"},
        {"type": "echo", "state": "SUCCEEDED"},
    ]

    answer = client.post("/jobs:batch", json={"jobs": jobs}, headers=auth())

    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == list(range(len(jobs)))
    assert [r["status"] for r in results] == [202, 422, 422, 422, 202, 200, 422, 422]
    assert results[0]["job"]["route"] == "lambda" and results[4]["job"]["route"] == "batch"
    assert results[5]["job"]["job_id"] == results[4]["job"]["job_id"]  # the key's replay, not a second job
    problems = {i: results[i]["problem"] for i in (1, 2, 3, 6, 7)}
    assert problems[1]["errors"][0]["loc"] == ["body", "priority"]
    assert problems[2]["type"].endswith("/unknown-job-type") and problems[2]["errors"][0]["loc"] == ["body", "type"]
    assert problems[3]["type"].endswith("/invalid-params") and ["body", "params", "video_id"] in [
        e["loc"] for e in problems[3]["errors"]]
    assert problems[6]["errors"][0]["loc"] == ["body", "idempotency_key"]
    assert problems[7]["errors"][0]["loc"] == ["body", "state"]  # server-owned fields are refused, as in POST /jobs
    assert len(items()) == 2


def test_a_batch_item_and_a_single_submit_with_one_key_are_one_job(client, auth) -> None:  # noqa: F811
    body = {"type": "echo", "params": {"order": 7}}
    single = client.post("/jobs", json=body, headers={**auth(), "Idempotency-Key": "order-7"})

    batch = client.post("/jobs:batch", json={"jobs": [{**body, "idempotency_key": "order-7"}]}, headers=auth())

    assert batch.json()["results"][0] == {"index": 0, "status": 200, "job": single.json(), "problem": None}


def test_every_accepted_item_is_one_put_item_and_nothing_else(client, auth, watched_aws_clients) -> None:  # noqa: F811
    watched_aws_clients.clear()

    answer = client.post("/jobs:batch", json={"jobs": [{"type": "echo", "params": {"n": n}} for n in range(25)]},
                         headers=auth())

    assert {r["status"] for r in answer.json()["results"]} == {202}
    assert watched_aws_clients.operations() == ["PutItem"] * 25


@pytest.mark.parametrize("jobs", [[], [{"type": "echo"}] * 26], ids=["empty", "over-25"])
def test_an_empty_or_oversized_batch_is_refused_whole(client, auth, items, jobs) -> None:  # noqa: F811
    answer = client.post("/jobs:batch", json={"jobs": jobs}, headers=auth())

    assert answer.status_code == 422 and answer.json()["errors"][0]["loc"] == ["body", "jobs"]
    assert items() == []


def test_an_item_that_meets_an_outage_is_a_503_the_others_are_accepted(client, auth, items,  # noqa: F811
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = JobStore.create
    calls: list[int] = []

    def create_failing_second(self: JobStore, job: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise DependencyUnavailable("dynamodb", "throttled")
        return real_create(self, job)

    monkeypatch.setattr(JobStore, "create", create_failing_second)
    answer = client.post("/jobs:batch", json={"jobs": [{"type": "echo", "params": {"n": n}, "idempotency_key": f"k{n}"}
                                                       for n in range(3)]}, headers=auth())

    assert [r["status"] for r in answer.json()["results"]] == [202, 503, 202]
    assert answer.json()["results"][1]["problem"]["type"].endswith("/unavailable")
    assert len(items()) == 2


def test_a_batch_needs_a_tenants_token(client) -> None:  # noqa: F811
    assert client.post("/jobs:batch", json={"jobs": [{"type": "echo"}]}).status_code == 401
