"""SweeperFunction in this process against moto server, invoked with events/schedule_sweeper.json as
EventBridge would: what the stream missed is re-dispatched, lapsed leases are ended, and a second
run changes nothing more. The bridge does not run here: the tests decide what was dispatched.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from events import load_event
from jobbridge.dynamo_codec import item_size
from jobbridge.limits import DYNAMODB_MAX_ITEM_BYTES
from jobbridge.ids import iso
from jobbridge.models import Job, JobCreate, JobError, Route, State
from jobbridge.registry import load_registry
from jobbridge.service import JobService
from jobbridge.store import JobStore
from jobbridge_local.sqs_poller import SqsMapping, SqsPoller

pytestmark = pytest.mark.integration

REGISTRY = load_registry()
NOTHING = {"redispatched": 0, "resent": 0, "redispatch_failed": 0, "queue_waits_expired": 0, "leases_requeued": 0,
           "leases_failed": 0, "leases_cancelled": 0, "skipped": 0, "errors": 0}


def store_of(stack: Any, clock: Any = None) -> JobStore:
    if clock is None:
        return JobStore(stack.table_name, client=stack.client("dynamodb"))
    return JobStore(stack.table_name, client=stack.client("dynamodb"), clock=clock)


def submit(stack: Any, job_type: str, params: dict[str, Any], *, minutes_ago: float = 0, **job: Any) -> Job:
    """A QUEUED lambda job recorded as the API records it, ``minutes_ago``, that the bridge never saw."""
    then = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    store = store_of(stack, clock=lambda: then)
    created = JobService(store, REGISTRY).submit("acme", JobCreate(type=job_type, params=params, target="public")).job
    assert created.route is Route.LAMBDA and created.dispatched_at is None
    if job:  # e.g. max_attempts: rewrite the record as a job type with that policy would have it
        created = created.model_copy(update=job)
        store_of(stack).client.delete_item(TableName=stack.table_name, Key={"job_id": {"S": created.job_id}})
        store.create(created)
    return created


def sweep(stack: Any) -> dict[str, Any]:
    return stack.function("sweeper").invoke(load_event("schedule_sweeper"))


def queued_bodies(stack: Any) -> list[dict[str, Any]]:
    """Every message in the public-lambda queue (received, then made visible again)."""
    sqs = stack.client("sqs")
    url = stack.queue_url("PublicLambdaQueue")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    for message in messages:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in messages]


def test_a_queued_job_whose_stream_record_was_lost_is_re_dispatched_once(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    lost = submit(stack, "sleep", {"seconds": 0.2, "steps": 1}, minutes_ago=10)
    recent = submit(stack, "echo", {"just": "now"})  # the bridge may simply not have got to it yet

    first = sweep(stack)

    assert first == {**NOTHING, "redispatched": 1}
    (body,) = queued_bodies(stack)
    assert body["job_id"] == lost.job_id and body["route"] == "lambda" and body["attempt"] == 0
    # the message says what the worker needs to decide before claiming, as the bridge's does
    assert (body["timeout_s"], body["expected_runtime_s"]) == (lost.timeout_s, lost.requirements.expected_runtime_s)
    assert body["expected_runtime_s"] == 1
    assert store.get(lost.job_id).dispatched_at is not None
    assert store.get(recent.job_id).dispatched_at is None

    second = sweep(stack)

    assert second == NOTHING
    assert len(queued_bodies(stack)) == 1

    # and the re-dispatched message runs the job
    (source,) = stack.event_sources("WorkerFunction", "SQS")
    mapping = SqsMapping.from_event_source(source, stack.queue_url("PublicLambdaQueue"))
    SqsPoller(mapping, stack.function("worker").invoke, stack.client("sqs"), wait_time_s=1).poll_once()
    assert store.get(lost.job_id).state is State.SUCCEEDED


def test_a_running_job_with_a_lapsed_lease_is_requeued_when_attempts_remain(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"worker": "died"})
    store.claim(job.job_id, "lambda-that-died", lease_s=-60)  # its lease lapsed a minute ago
    alive = submit(stack, "echo", {"worker": "alive"})
    store.claim(alive.job_id, "lambda-alive", lease_s=600)

    first = sweep(stack)

    requeued = store.get(job.job_id)
    assert first == {**NOTHING, "leases_requeued": 1}
    assert requeued.state is State.QUEUED and requeued.attempt == 1
    assert requeued.lease_owner is None and requeued.dispatched_at is None  # the bridge sends the retry
    assert requeued.not_before is not None
    assert requeued.error is not None
    assert (requeued.error.type, requeued.error.retryable, requeued.error.attempt) == ("LeaseExpired", True, 1)
    assert "lambda-that-died" in requeued.error.message
    assert [h.event for h in requeued.history] == ["submitted", "claimed", "lease_expired"]
    assert store.get(alive.job_id).state is State.RUNNING  # a live lease is left alone

    second = sweep(stack)

    assert second == NOTHING
    assert store.get(job.job_id) == requeued


def test_a_running_job_with_a_lapsed_lease_and_no_attempts_left_fails_as_lost(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"worker": "died"}, max_attempts=1)
    store.claim(job.job_id, "lambda-that-died", lease_s=-60)

    first = sweep(stack)

    failed = store.get(job.job_id)
    assert first == {**NOTHING, "leases_failed": 1}
    assert failed.state is State.FAILED and failed.attempt == 1
    assert failed.error is not None
    assert (failed.error.type, failed.error.attempt) == ("LeaseExpired", 1)
    assert "attempt 1 of 1" in failed.error.message
    assert [h.event for h in failed.history] == ["submitted", "claimed", "lease_expired"]

    second = sweep(stack)

    assert second == NOTHING
    assert store.get(job.job_id) == failed


def test_a_lease_renewed_before_the_sweeper_writes_wins(template_stack) -> None:
    # The sweeper's write is conditional on the lease still being lapsed: a heartbeat landing
    # between its read and its write keeps the job running.
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"worker": "slow"})
    claimed = store.claim(job.job_id, "lambda-slow", lease_s=-60)
    store.heartbeat(job.job_id, claimed.attempt, "lambda-slow", lease_s=600)

    with pytest.raises(Exception) as refused:
        store.expire_lease(job.job_id, claimed.attempt, JobError(type="LeaseExpired", message="x", retryable=True), 1.0)

    assert type(refused.value).__name__ == "InvalidTransition"
    assert sweep(stack) == NOTHING
    assert store.get(job.job_id).state is State.RUNNING


def test_one_record_that_cannot_be_written_is_counted_and_the_sweep_goes_on(template_stack) -> None:
    # A record a few bytes under DynamoDB's 400 KB (written before the size budget): ending its
    # lease adds an error and a history entry, which DynamoDB refuses. It must not stop the sweep.
    stack = template_stack()
    store = store_of(stack)
    bad = submit(stack, "echo", {"record": "near the limit"})
    store.claim(bad.job_id, "lambda-that-died", lease_s=-600)  # lapsed first: the sweep meets it first
    item = store.client.get_item(TableName=stack.table_name, Key={"job_id": {"S": bad.job_id}})["Item"]
    item["params"] = {"S": json.dumps({"blob": ""})}
    item["params"] = {"S": json.dumps({"blob": "x" * (DYNAMODB_MAX_ITEM_BYTES - item_size(item) - 60)})}
    store.client.put_item(TableName=stack.table_name, Item=item)
    good = submit(stack, "echo", {"worker": "died"})
    store.claim(good.job_id, "lambda-that-died-too", lease_s=-60)

    report = sweep(stack)

    assert report == {**NOTHING, "leases_requeued": 1, "errors": 1}
    assert store.get(good.job_id).state is State.QUEUED
    assert store.client.get_item(TableName=stack.table_name, Key={"job_id": {"S": bad.job_id}})["Item"] == item


def test_a_lapsed_lease_of_a_job_whose_cancel_was_requested_ends_it_cancelled(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"worker": "died after the cancel request"})
    store.claim(job.job_id, "lambda-that-died", lease_s=-60)
    store.cancel(job.job_id, "acme")

    assert sweep(stack) == {**NOTHING, "leases_cancelled": 1}
    ended = store.get(job.job_id)
    assert ended.state is State.CANCELLED and ended.error is not None and ended.error.type == "LeaseExpired"


def test_a_job_nothing_claimed_within_its_queue_wait_fails_as_queue_wait_expired(template_stack) -> None:
    # given a job accepted 10 minutes ago with a 2-minute queue wait, dispatched, never claimed
    # (its message lost: expired, purged, or sitting behind an agent that never came)
    stack = template_stack()
    store = store_of(stack)
    then = datetime.now(timezone.utc) - timedelta(minutes=10)
    old = store_of(stack, clock=lambda: then)
    job = JobService(old, REGISTRY).submit("acme", JobCreate(type="echo", params={"n": 1}, target="public",
                                                             queue_wait_s=120)).job
    assert old.mark_dispatched(job.job_id, 0, iso(then + timedelta(seconds=120)))  # as the bridge marks it

    report = sweep(stack)

    failed = store.get(job.job_id)
    assert report == {**NOTHING, "queue_waits_expired": 1}
    assert failed.state is State.FAILED and failed.error is not None and failed.error.type == "QueueWaitExpired"
    assert queued_bodies(stack) == []  # nothing sent for a job that is over
