"""Hot job types: run in the submit request within a strict budget, recorded final with one write,
answered 200 (moto in process)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from events import stream_record
from jobbridge.dispatch import dispatch_of
from jobbridge.errors import PermanentError
from jobbridge.models import JobCreate, Route, State
from jobbridge.registry import Registry, job_type
from jobbridge.service import JobService
from jobbridge.store import JobStore
# The app and its fixtures are test_api's.
from test_api import (app, auth, client, items, make_token, public_key_file, settings,  # noqa: F401 (fixtures)
                      signing_key)


class Nothing(BaseModel):
    pass


# --- declaring a hot type ----------------------------------------------------------------------------


@pytest.mark.parametrize(("placements", "budget", "reason"), [
    ({Route.LAMBDA, Route.BATCH}, 50, "placements"),
    ({Route.PRIVATE}, 50, "placements"),
    ({Route.LAMBDA}, 0, "hot_budget_ms"),
    ({Route.LAMBDA}, 5000, "hot_budget_ms"),
])
def test_a_hot_type_runs_on_lambda_only_within_a_second(placements, budget: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        job_type("bad_hot", params=Nothing, placements=placements, hot_budget_ms=budget, registry=Registry())(
            lambda params, ctx: None)


# --- through the API ----------------------------------------------------------------------------------


def test_a_hot_submit_answers_200_with_the_result_after_one_put_item(client, auth, items,  # noqa: F811
                                                                    watched_aws_clients) -> None:
    watched_aws_clients.clear()

    answer = client.post("/jobs", json={"type": "checksum", "params": {"text": "hello"}}, headers=auth())

    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["state"] == "SUCCEEDED" and job["route"] == "lambda" and job["attempt"] == 1
    assert job["result"]["hexdigest"] == hashlib.sha256(b"hello").hexdigest()
    assert [h["event"] for h in job["history"]] == ["submitted", "ran_inline", "succeeded"]
    assert answer.headers["location"] == f"/jobs/{job['job_id']}"
    assert watched_aws_clients.operations() == ["PutItem"]  # one write, no message
    (item,) = items()
    assert "active_state" not in item and "due_at" not in item  # never in the sweeper's active index
    assert client.get(f"/jobs/{job['job_id']}", headers=auth()).json() == job


def test_the_bridge_does_not_dispatch_a_hot_jobs_record(client, auth, items) -> None:  # noqa: F811
    client.post("/jobs", json={"type": "checksum", "params": {"text": "x"}}, headers=auth())
    (item,) = items()

    assert dispatch_of(stream_record(item, sequence_number="1")) is None


def test_a_hot_replay_is_the_first_job(client, auth) -> None:  # noqa: F811
    headers = {**auth(), "Idempotency-Key": "sum-1"}
    first = client.post("/jobs", json={"type": "checksum", "params": {"text": "a"}}, headers=headers)
    again = client.post("/jobs", json={"type": "checksum", "params": {"text": "a"}}, headers=headers)

    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_a_hot_type_cannot_be_sent_private_and_cold_types_still_answer_202(client, auth) -> None:  # noqa: F811
    refused = client.post("/jobs", json={"type": "checksum", "params": {"text": "a"}, "target": "private"},
                          headers=auth())
    assert refused.status_code == 422 and refused.json()["type"].endswith("/placement-not-allowed")

    cold = client.post("/jobs", json={"type": "echo"}, headers=auth())
    assert cold.status_code == 202 and cold.json()["state"] == "QUEUED"


# --- the budget, at the service ---------------------------------------------------------------------


@pytest.fixture
def hot_service(settings, ddb) -> tuple[JobService, Registry, dict[str, Any]]:  # noqa: F811
    registry = Registry()
    seen: dict[str, Any] = {"release": threading.Event(), "after_sleep": False}

    @job_type("stuck", params=Nothing, placements={Route.LAMBDA}, hot_budget_ms=50, registry=registry)
    def stuck(params: Nothing, ctx: Any) -> str:
        seen["release"].wait(60)  # ignores its context: holds its thread until the test releases it
        return "late"

    @job_type("sleepy", params=Nothing, placements={Route.LAMBDA}, hot_budget_ms=50, registry=registry)
    def sleepy(params: Nothing, ctx: Any) -> str:
        ctx.sleep(30)  # cooperative: the context wakes it at the budget
        seen["after_sleep"] = True
        return "late"

    @job_type("refuses", params=Nothing, placements={Route.LAMBDA}, hot_budget_ms=500, registry=registry)
    def refuses(params: Nothing, ctx: Any) -> None:
        raise PermanentError("not this one")

    @job_type("opaque", params=Nothing, placements={Route.LAMBDA}, hot_budget_ms=500, registry=registry)
    def opaque(params: Nothing, ctx: Any) -> object:
        return object()

    return JobService(JobStore(settings.table_name, client=ddb), registry), registry, seen


def test_past_its_budget_a_hot_job_fails_without_holding_the_request(hot_service) -> None:
    service, _, seen = hot_service
    try:
        job = service.submit("acme", JobCreate(type="stuck")).job

        assert not seen["release"].is_set()  # answered while the function was still running
        assert job.state is State.FAILED and job.error.type == "HotBudgetExceeded" and not job.error.retryable
        assert "50 ms" in job.error.message
        assert service.store.get(job.job_id).state is State.FAILED
    finally:
        seen["release"].set()


def test_a_cooperative_hot_job_is_stopped_at_its_budget(hot_service) -> None:
    service, _, seen = hot_service

    job = service.submit("acme", JobCreate(type="sleepy")).job

    assert job.error.type == "HotBudgetExceeded" and seen["after_sleep"] is False


@pytest.mark.parametrize(("job_type_name", "error_type"), [("refuses", "PermanentError"), ("opaque", "ResultNotJSON")])
def test_a_hot_jobs_own_failure_is_recorded_failed(hot_service, job_type_name: str, error_type: str) -> None:
    service, _, _ = hot_service

    job = service.submit("acme", JobCreate(type=job_type_name)).job

    assert job.state is State.FAILED and job.error.type == error_type
    assert [h.event for h in job.history] == ["submitted", "ran_inline", "failed"]


def test_a_hot_job_waiting_for_a_busy_pool_fails_at_its_budget_and_never_starts(hot_service) -> None:
    from jobbridge.inline import POOL_THREADS

    service, registry, seen = hot_service
    started: list[str] = []

    @job_type("quick", params=Nothing, placements={Route.LAMBDA}, hot_budget_ms=50, registry=registry)
    def quick(params: Nothing, ctx: Any) -> str:
        started.append("quick")
        return "done"

    try:
        for _ in range(POOL_THREADS):  # every thread held by a function that ignores its context
            assert service.submit("acme", JobCreate(type="stuck")).job.error.type == "HotBudgetExceeded"

        job = service.submit("acme", JobCreate(type="quick")).job

        assert job.state is State.FAILED and job.error.type == "HotBudgetExceeded"
    finally:
        seen["release"].set()
    from jobbridge.inline import _pool

    _pool().shutdown(wait=True)  # every run started or still queued ends first
    _pool.cache_clear()
    assert started == []  # the queued run was cancelled, not run late
