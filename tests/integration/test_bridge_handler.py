"""functions/bridge/app.py's handler (the outbox relay) fed the jobs table's own stream, read
from moto server, and the stored events/bridge_stream_insert.json; messages read back from the
route queues over HTTP."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from events import load_event, stream_event, stream_record
from jobbridge.errors import InvalidTransition
from jobbridge.models import JobCreate, JobError, Route, State
from jobbridge.registry import load_registry
from jobbridge.service import JobService
from jobbridge.store import JobStore
from jobbridge_local.stream_poller import to_lambda_record
from jobbridge_local.template import LOCAL_REGION

CONTRACT_FIELDS = {"job_id", "route", "attempt", "correlation_id"}  # docs/CONTRACTS.md, queue message body

SUBMISSIONS = {
    Route.LAMBDA: JobCreate(type="echo", params={"secret": "never in a message"}),
    Route.BATCH: JobCreate(type="transcode", params={"video_id": "v-8k", "resolution": "8K"}),
    Route.PRIVATE: JobCreate(type="genome_align", params={"sample_id": "S-1"}),
}


class StreamReader:
    """Reads the table's stream as Lambda's event source mapping would hand it over."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.client = stack.client("dynamodbstreams")
        self.seen = 0

    def all(self) -> list[dict[str, Any]]:
        shards = self.client.describe_stream(StreamArn=self.stack.stream_arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            iterator = self.client.get_shard_iterator(StreamArn=self.stack.stream_arn, ShardId=shard["ShardId"],
                                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                out = self.client.get_records(ShardIterator=iterator, Limit=1000)
                if not out["Records"]:
                    break
                records += [to_lambda_record(r, self.stack.stream_arn, LOCAL_REGION) for r in out["Records"]]
                iterator = out.get("NextShardIterator")
        return records

    def new(self) -> list[dict[str, Any]]:
        """The records written since the last call."""
        records = self.all()
        fresh, self.seen = records[self.seen:], len(records)
        return fresh


def drain(stack, route: Route) -> list[dict[str, Any]]:
    """Every message on a route's queue (received once: hidden for the rest of the test)."""
    sqs = stack.client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        out = sqs.receive_message(QueueUrl=stack.queue_url(route), MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  VisibilityTimeout=300, MessageAttributeNames=["All"])
        if not out.get("Messages"):
            return messages
        messages += out["Messages"]


@pytest.fixture
def stack(fresh_stack):
    return fresh_stack


@pytest.fixture
def store(stack, stack_store) -> JobStore:
    return stack_store(stack)


@pytest.fixture
def service(store) -> JobService:
    return JobService(store, load_registry())


@pytest.fixture
def stream(stack) -> StreamReader:
    return StreamReader(stack)


@pytest.fixture
def relay(function_env, stack, bridge_handler, lambda_context) -> Callable[..., dict[str, Any]]:
    """Invoke the bridge with records (or a whole event), under its template environment."""
    state: dict[str, Any] = {"spec": function_env("bridge", stack)}

    def invoke(records_or_event: list[dict[str, Any]] | dict[str, Any], **env: str) -> dict[str, Any]:
        if env:
            state["spec"] = function_env("bridge", stack, **env)
        event = records_or_event if isinstance(records_or_event, dict) else stream_event(*records_or_event)
        return bridge_handler(event, lambda_context(state["spec"]))

    return invoke


def body_of(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["Body"])


# --- new jobs ------------------------------------------------------------------------------------------


def test_each_new_job_lands_on_its_route_queue_without_params(service, store, stream, relay, stack) -> None:
    # given one job per route, recorded by the service (one write each)
    jobs = {route: service.submit("acme", request, correlation_id=f"corr-{route.value}").job
            for route, request in SUBMISSIONS.items()}
    inserts = stream.new()
    assert [r["eventName"] for r in inserts] == ["INSERT"] * 3

    # when the bridge gets the stream batch
    response = relay(inserts)

    # then every job is on its own route's queue, once, with the contract's body and no params
    assert response == {"batchItemFailures": []}
    for route, job in jobs.items():
        (message,) = drain(stack, route)
        body = body_of(message)
        assert CONTRACT_FIELDS <= set(body)
        assert body["job_id"] == job.job_id
        assert body["route"] == route.value
        assert body["attempt"] == 0
        assert body["correlation_id"] == f"corr-{route.value}"
        assert "params" not in body and "never in a message" not in message["Body"]
        assert message["MessageAttributes"]["job_id"]["StringValue"] == job.job_id
        stored = store.get(job.job_id)
        assert stored.dispatched_at is not None
        assert stored.state is State.QUEUED


def test_the_bridges_own_dispatched_at_write_is_skipped(service, stream, relay, stack) -> None:
    service.submit("acme", SUBMISSIONS[Route.LAMBDA])
    relay(stream.new())
    assert len(drain(stack, Route.LAMBDA)) == 1

    modifies = stream.new()  # what mark_dispatched wrote
    assert [r["eventName"] for r in modifies] == ["MODIFY"]
    assert "dispatched_at" in modifies[0]["dynamodb"]["NewImage"]

    assert relay(modifies) == {"batchItemFailures": []}
    assert drain(stack, Route.LAMBDA) == []
    assert stream.new() == []  # and it wrote nothing: no loop


def test_the_stored_stream_event_dispatches_the_insert_and_skips_the_modify(relay, stack, store) -> None:
    # given the job the stored event's INSERT describes is in the table
    event = load_event("bridge_stream_insert")
    insert, modify = event["Records"]
    assert (insert["eventName"], modify["eventName"]) == ("INSERT", "MODIFY")
    stack.client("dynamodb").put_item(TableName=stack.table_name, Item=insert["dynamodb"]["NewImage"])
    job_id = insert["dynamodb"]["Keys"]["job_id"]["S"]

    # when the bridge gets the stored batch
    response = relay(event)

    # then only the INSERT was sent, to its route, and recorded
    assert response == {"batchItemFailures": []}
    (message,) = drain(stack, Route.LAMBDA)
    assert body_of(message)["job_id"] == job_id
    assert body_of(message)["correlation_id"] == insert["dynamodb"]["NewImage"]["correlation_id"]["S"]
    assert drain(stack, Route.BATCH) == drain(stack, Route.PRIVATE) == []
    assert store.get(job_id).dispatched_at is not None


def test_a_duplicate_stream_record_leaves_the_job_alone_and_only_one_claim_wins(service, store, stream, relay, stack) -> None:
    job = service.submit("acme", SUBMISSIONS[Route.LAMBDA]).job
    (insert,) = stream.new()

    # when the same record is delivered twice (streams are at least once)
    assert relay([insert]) == {"batchItemFailures": []}
    dispatched_at = store.get(job.job_id).dispatched_at
    assert relay([insert]) == {"batchItemFailures": []}

    # then the job is as the first delivery left it
    after = store.get(job.job_id)
    assert (after.state, after.attempt, after.dispatched_at) == (State.QUEUED, 0, dispatched_at)

    # and of the messages sent, only one claim succeeds
    messages = drain(stack, Route.LAMBDA)
    assert 1 <= len(messages) <= 2
    outcomes = []
    for message in messages + messages[:1]:  # a redelivery of the first message as well
        body = body_of(message)
        try:
            store.claim(body["job_id"], f"worker-{len(outcomes)}", 60, expected_attempt=body["attempt"])
            outcomes.append("claimed")
        except InvalidTransition:
            outcomes.append("dropped")
    assert outcomes.count("claimed") == 1
    claimed = store.get(job.job_id)
    assert (claimed.state, claimed.attempt) == (State.RUNNING, 1)


def test_a_failed_send_reports_exactly_that_record_and_the_others_are_sent(service, store, stream, relay, stack) -> None:
    # given one job per route, and the batch route's queue URL pointing at a queue that does not exist
    jobs = {route: service.submit("acme", request).job for route, request in SUBMISSIONS.items()}
    records = stream.new()
    batch_record = next(r for r in records if r["dynamodb"]["NewImage"]["route"]["S"] == "batch")
    missing = stack.queue_url(Route.BATCH).rsplit("/", 1)[0] + "/no-such-queue"

    # when the bridge relays the batch
    response = relay(records, JOBBRIDGE_QUEUE_URL_BATCH=missing)

    # then exactly the batch job's record is reported, and the other two went out
    assert response == {"batchItemFailures": [{"itemIdentifier": batch_record["dynamodb"]["SequenceNumber"]}]}
    assert [body_of(m)["job_id"] for m in drain(stack, Route.LAMBDA)] == [jobs[Route.LAMBDA].job_id]
    assert [body_of(m)["job_id"] for m in drain(stack, Route.PRIVATE)] == [jobs[Route.PRIVATE].job_id]
    assert store.get(jobs[Route.BATCH].job_id).dispatched_at is None

    # and when Lambda retries from the reported record with the queue fixed, it goes out
    retry_from = records.index(batch_record)
    assert relay(records[retry_from:], JOBBRIDGE_QUEUE_URL_BATCH=stack.queue_url(Route.BATCH)) == {"batchItemFailures": []}
    assert [body_of(m)["job_id"] for m in drain(stack, Route.BATCH)] == [jobs[Route.BATCH].job_id]
    assert store.get(jobs[Route.BATCH].job_id).dispatched_at is not None


# --- later changes of a job ------------------------------------------------------------------------------


def test_a_retry_is_dispatched_again_with_the_new_attempt(service, store, stream, relay, stack) -> None:
    job = service.submit("acme", SUBMISSIONS[Route.PRIVATE]).job
    relay(stream.new())
    drain(stack, Route.PRIVATE)
    store.claim(job.job_id, "agent-1", 60)
    store.fail(job.job_id, 1, JobError(type="Flaky", message="try again", retryable=True), retry_delay_s=0)

    response = relay(stream.new())

    assert response == {"batchItemFailures": []}
    (message,) = drain(stack, Route.PRIVATE)
    assert (body_of(message)["job_id"], body_of(message)["attempt"]) == (job.job_id, 1)
    assert store.claim(job.job_id, "agent-2", 60, expected_attempt=1).attempt == 2


def test_cancelled_and_finished_jobs_send_nothing(service, store, stream, relay, stack) -> None:
    cancelled = service.submit("acme", SUBMISSIONS[Route.LAMBDA]).job
    done = service.submit("acme", SUBMISSIONS[Route.LAMBDA]).job
    store.cancel(cancelled.job_id, "acme")
    store.claim(done.job_id, "worker-1", 60)
    store.complete(done.job_id, 1, {"ok": True})
    records = [r for r in stream.new() if r["eventName"] == "MODIFY"]
    assert len(records) == 3

    assert relay(records) == {"batchItemFailures": []}
    assert drain(stack, Route.LAMBDA) == []


def test_a_remove_record_is_skipped(service, stream, relay, stack) -> None:
    service.submit("acme", SUBMISSIONS[Route.LAMBDA])
    (insert,) = stream.new()
    removal = stream_record(insert["dynamodb"]["NewImage"], sequence_number="9" * 21, event_name="REMOVE")
    removal["dynamodb"]["OldImage"] = removal["dynamodb"].pop("NewImage")

    assert relay([removal]) == {"batchItemFailures": []}
    assert drain(stack, Route.LAMBDA) == []
