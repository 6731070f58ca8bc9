"""Public jobs on the Lambda route end to end: the `make run` stack in a subprocess, driven over HTTP
as a person would. The API records the job, the stream and the bridge send it to the public-lambda
queue, the worker's SQS trigger (derived from template.yaml) runs it; retries come back through the
bridge with their backoff; a message the worker cannot read reaches the DLQ after MaxReceiveCount
receives and DeadLetterFunction fails its job; the sweeper's schedule ends a dead worker's lease.

Template parameters are overridden as a developer would (JOBBRIDGE_LOCAL_PARAMS): a failed record
returns in 3 s instead of 90 minutes.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import httpx
import pytest

from e2e_stack import RunningStack, start_stack, wait_for
from jobbridge.dynamo_codec import encode_item
from jobbridge.ids import iso, new_job_id
from jobbridge.models import HistoryEntry, Job, Route, State

pytestmark = pytest.mark.e2e

FUNCTIONS = "ApiFunction,BridgeFunction,WorkerFunction,DeadLetterFunction,SweeperFunction"
VISIBILITY_S = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("public-lambda-stack"), functions=FUNCTIONS, extra_env={
        "JOBBRIDGE_LOCAL_PARAMS": f"PublicLambdaVisibilityTimeout={VISIBILITY_S},WorkerMaximumConcurrency=2",
        "JOBBRIDGE_SWEEP_INTERVAL_S": "2",
    })
    yield running
    running.stop()


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client("acme") as client:
        yield client


def submit(api: httpx.Client, job_type: str, params: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/jobs", json={"type": job_type, "params": params, "target": "public"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "QUEUED" and accepted["route"] == "lambda"
    return accepted


def watch(api: httpx.Client, job_id: str, timeout: float = 60) -> tuple[list[str], dict[str, Any]]:
    """Poll the job as a person refreshing the page would: the states seen, in order, and the final job."""
    seen: list[str] = []
    final: dict[str, Any] = {}

    def done() -> bool:
        nonlocal final
        job = api.get(f"/jobs/{job_id}").json()
        if not seen or seen[-1] != job["state"]:
            seen.append(job["state"])
        final = job
        return job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED")

    wait_for(done, timeout=timeout, interval=0.1, what=f"{job_id} to finish")
    return seen, final


def events(job: dict[str, Any]) -> list[str]:
    return [entry["event"] for entry in job["history"]]


def test_a_person_sees_public_jobs_go_queued_running_succeeded(api: httpx.Client) -> None:
    sleeper = submit(api, "sleep", {"seconds": 2, "steps": 4})
    echo = submit(api, "echo", {"hello": "lambda"})

    seen, done = watch(api, sleeper["job_id"])
    _, echoed = watch(api, echo["job_id"])

    assert seen == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert done["result"] == {"slept_s": 2.0, "steps": 4}
    assert done["progress"] == {"fraction": 1.0, "message": "step 4/4"}
    assert done["attempt"] == 1 and done["error"] is None
    assert events(done) == ["submitted", "claimed", "succeeded"]
    assert [entry["state"] for entry in done["history"]] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert echoed["state"] == "SUCCEEDED" and echoed["result"] == {"hello": "lambda"}
    assert echoed["dispatched_at"] and echoed["started_at"] and echoed["finished_at"]


def test_a_retryable_failure_is_retried_through_the_bridge_then_failed(api: httpx.Client) -> None:
    accepted = submit(api, "fail", {"message": "still flaky", "retryable": True})

    _, failed = watch(api, accepted["job_id"])

    assert failed["state"] == "FAILED"
    assert failed["attempt"] == failed["max_attempts"] == 3
    assert failed["error"] == {"type": "RetryableError", "message": "still flaky", "retryable": True, "attempt": 3}
    assert events(failed) == ["submitted", "claimed", "retry_scheduled", "claimed", "retry_scheduled",
                              "claimed", "failed"]


def test_a_message_the_worker_cannot_read_is_dead_lettered_and_its_job_failed(stack: RunningStack,
                                                                             api: httpx.Client) -> None:
    # A job recorded without a message, then a malformed message for it (as a bug elsewhere would send).
    job = put_job(stack, state=State.QUEUED, dispatched=True)
    stack.aws("sqs").send_message(QueueUrl=stack.queue_url("PublicLambdaQueue"),
                                  MessageBody=json.dumps({"job_id": job.job_id, "route": "lambda", "attempt": 0,
                                                          "timeout_s": "?"}))  # it names attempt 0: the job's

    _, failed = watch(api, job.job_id, timeout=120)

    assert failed["state"] == "FAILED"
    assert failed["error"]["type"] == "DeadLettered" and failed["error"]["retryable"] is False
    assert "receives from arn:aws:sqs:us-east-1:123456789012:jobbridge-public-lambda-dlq" in failed["error"]["message"]
    assert events(failed) == ["submitted", "failed"]


def test_a_job_whose_worker_died_is_requeued_by_the_sweeper_and_succeeds(stack: RunningStack,
                                                                         api: httpx.Client) -> None:
    # RUNNING on attempt 1 of 3 with a lease that lapsed a minute ago: its worker is gone.
    job = put_job(stack, state=State.RUNNING, dispatched=True)

    _, done = watch(api, job.job_id, timeout=90)

    assert done["state"] == "SUCCEEDED" and done["attempt"] == 2
    assert events(done) == ["submitted", "claimed", "lease_expired", "claimed", "succeeded"]
    assert done["error"]["type"] == "LeaseExpired"  # the last error stays on the record


# --- support ---------------------------------------------------------------------------------------------


def put_job(stack: RunningStack, *, state: State, dispatched: bool) -> Job:
    """Write an echo job of tenant acme straight to the table, as the store would have left it."""
    now = datetime.now(timezone.utc)
    created = now - timedelta(minutes=1)
    history = [HistoryEntry(at=iso(created), state=State.QUEUED, event="submitted", detail="lambda")]
    values: dict[str, Any] = {}
    if state is State.RUNNING:
        lapsed = iso(now - timedelta(seconds=60))
        history.append(HistoryEntry(at=iso(created), state=State.RUNNING, event="claimed", detail="lambda"))
        values = {"attempt": 1, "lease_owner": "lambda", "lease_expires_at": lapsed, "started_at": iso(created),
                  "heartbeat_at": iso(created)}
    job = Job(job_id=new_job_id(), tenant="acme", type="echo", params={"from": "the table"}, route=Route.LAMBDA,
              state=state, max_attempts=3, timeout_s=60, created_at=iso(created), updated_at=iso(created),
              dispatched_at=iso(created) if dispatched else None, history=history, **values)
    record = job.model_dump(mode="json", exclude_none=True)
    record["active_state"] = state.value
    record["due_at"] = values.get("lease_expires_at", iso(created))
    stack.aws("dynamodb").put_item(TableName=stack.info["table"], Item=encode_item(record))
    return job
