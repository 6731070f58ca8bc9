"""JobSubmitter: the API's hot path as a call in the user's own app (moto in process)."""

from __future__ import annotations

from typing import Any

import pytest

from jobbridge.config import Settings
from jobbridge.errors import (IdempotencyConflict, InvalidParams, InvalidRequest, JobNotFound, PlacementNotAllowed,
                              UnknownJobType)
from jobbridge.models import Route, State
from jobbridge.submitter import JobSubmitter
# The API app and its token fixtures, to compare the two hot paths.
from test_api import app, auth, make_token, public_key_file, settings, signing_key  # noqa: F401 (fixtures)

# What differs between two submits of the same request: who, when, and the ids.
PER_SUBMIT = {"job_id", "tenant", "created_at", "updated_at", "expires_at", "history", "correlation_id",
              "idempotency_key"}


@pytest.fixture
def submitter(settings: Settings, watched_aws_clients) -> JobSubmitter:  # noqa: F811
    return JobSubmitter("video-shop", settings)


def stored(items: list[dict[str, Any]]) -> list[str]:
    return [item["job_id"]["S"] for item in items]


def test_a_submit_is_one_conditional_put_item_and_the_job_is_queued(submitter: JobSubmitter, watched_aws_clients,
                                                                     ddb, settings: Settings) -> None:  # noqa: F811
    watched_aws_clients.clear()

    submitted = submitter.submit("transcode", {"video_id": "v1", "resolution": "8K"})

    assert watched_aws_clients.operations() == ["PutItem"]
    assert "ConditionExpression" in watched_aws_clients.params("PutItem")[0]
    job = submitted.job
    assert submitted.created and job.state is State.QUEUED and job.route is Route.BATCH
    assert job.tenant == "video-shop" and job.requirements.gpu
    assert submitter.get(job.job_id).state is State.QUEUED


def test_the_record_is_the_one_the_api_writes_for_the_same_request(submitter: JobSubmitter, client_of_app,
                                                                   auth) -> None:  # noqa: F811
    body = {"type": "transcode", "params": {"video_id": "v2", "resolution": "720p"}, "priority": 5}
    answer = client_of_app.post("/jobs", json=body, headers=auth("video-shop"))
    assert answer.status_code == 202, answer.text

    in_app = submitter.submit("transcode", {"video_id": "v2", "resolution": "720p"}, priority=5).job
    via_api = submitter.store.get(answer.json()["job_id"])

    assert in_app.model_dump(exclude=PER_SUBMIT) == via_api.model_dump(exclude=PER_SUBMIT)
    assert in_app.route is Route.PRIVATE
    listed = client_of_app.get("/jobs", headers=auth("video-shop")).json()["items"]
    assert [j["job_id"] for j in listed] == [in_app.job_id, via_api.job_id]  # the tenant sees both


def test_an_idempotency_key_makes_one_job_and_refuses_another_body(submitter: JobSubmitter, ddb,
                                                                   settings: Settings) -> None:  # noqa: F811
    first = submitter.submit("echo", {"n": 1}, idempotency_key="order-42")
    again = submitter.submit("echo", {"n": 1}, idempotency_key="order-42")

    assert first.created and not again.created and again.job.job_id == first.job.job_id
    with pytest.raises(IdempotencyConflict):
        submitter.submit("echo", {"n": 2}, idempotency_key="order-42")
    assert len(ddb.scan(TableName=settings.table_name)["Items"]) == 1


@pytest.mark.parametrize(("call", "error", "loc"), [
    (lambda s: s.submit("echo", priority=500), InvalidRequest, ["body", "priority"]),
    (lambda s: s.submit("echo", target="moon"), InvalidRequest, ["body", "target"]),
    (lambda s: s.submit("echo", idempotency_key="has space"), InvalidRequest, ["header", "Idempotency-Key"]),
    (lambda s: s.submit("transcode", {"resolution": "8K"}), InvalidParams, ["body", "params", "video_id"]),
    (lambda s: s.submit("no_such_type"), UnknownJobType, None),
    (lambda s: s.submit("genome_align", {"sample_id": "s1"}, target="public"), PlacementNotAllowed, None),
], ids=["priority", "target", "key", "params", "type", "placement"])
def test_what_the_api_refuses_is_refused_and_nothing_is_written(submitter: JobSubmitter, ddb, settings: Settings,  # noqa: F811
                                                                call, error, loc) -> None:
    with pytest.raises(error) as raised:
        call(submitter)

    if loc is not None:
        assert loc in [e["loc"] for e in raised.value.errors]
    assert ddb.scan(TableName=settings.table_name)["Items"] == []


def test_another_tenants_job_is_not_found(submitter: JobSubmitter, settings: Settings) -> None:  # noqa: F811
    job_id = JobSubmitter("globex", settings).submit("echo").job.job_id

    with pytest.raises(JobNotFound):
        submitter.get(job_id)
    with pytest.raises(JobNotFound):
        submitter.get("not-a-job-id")
    with pytest.raises(ValueError, match="tenant"):
        JobSubmitter("two words", settings)


def test_it_is_importable_from_the_package_root_without_the_api() -> None:
    import subprocess
    import sys

    probe = ("import sys; from jobbridge import JobSubmitter; "
             "print(JobSubmitter.__name__, [m for m in ('fastapi', 'jobbridge_api') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "JobSubmitter []", done.stderr


@pytest.fixture
def client_of_app(app):  # noqa: F811
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)
