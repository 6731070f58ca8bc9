"""jobbridge_local.stream_poller against moto server: Lambda's DynamoDB stream trigger, emulated.

Each test gets an empty emulator (this module's moto server, reset) and the jobs table from
template.yaml; the mapping settings come from BridgeFunction's stream event in the template.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import pytest

from jobbridge_local.motoserver import MotoServer, free_port
from jobbridge_local.resources import LocalResources, client, create_resources
from jobbridge_local.stream_poller import StreamMapping, StreamPoller
from jobbridge_local.template import LocalContext, load_template

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def module_moto_server() -> Any:
    server = MotoServer(port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_moto_server(module_moto_server: MotoServer) -> MotoServer:
    """This module's server, emptied: a new stream per test without a new process."""
    module_moto_server.reset()
    return module_moto_server


@pytest.fixture
def stack(fresh_moto_server: Any) -> LocalResources:
    return create_resources(fresh_moto_server.endpoint_url)


@pytest.fixture
def mapping(fresh_moto_server: Any, stack: LocalResources) -> StreamMapping:
    context = LocalContext(endpoint_url=fresh_moto_server.endpoint_url, attributes=stack.attributes())
    (source,) = load_template().event_sources("BridgeFunction", "DynamoDB", context)
    return StreamMapping.from_event_source(source, function_arn="arn:aws:lambda:us-east-1:123456789012:function:b")


@pytest.fixture
def ddb(fresh_moto_server: Any) -> Any:
    return client("dynamodb", fresh_moto_server.endpoint_url, "us-east-1")


@pytest.fixture
def sqs(fresh_moto_server: Any) -> Any:
    return client("sqs", fresh_moto_server.endpoint_url, "us-east-1")


@pytest.fixture
def streams(fresh_moto_server: Any) -> Any:
    return client("dynamodbstreams", fresh_moto_server.endpoint_url, "us-east-1")


class Recorder:
    """A fake function: records events, answers with whatever ``respond`` returns."""

    def __init__(self, respond: Any = None):
        self.events: list[dict[str, Any]] = []
        self.respond = respond or (lambda event, call: None)

    def __call__(self, event: dict[str, Any]) -> Any:
        self.events.append(json.loads(json.dumps(event)))  # what Lambda sends is JSON
        return self.respond(event, len(self.events))

    def job_ids(self, call: int) -> list[str]:
        return [r["dynamodb"]["Keys"]["job_id"]["S"] for r in self.events[call]["Records"]]


def put_jobs(ddb: Any, table: str, *job_ids: str) -> None:
    for job_id in job_ids:
        ddb.put_item(TableName=table, Item={"job_id": {"S": job_id}, "state": {"S": "QUEUED"}, "attempt": {"N": "0"}})


def test_an_insert_arrives_as_a_real_shaped_lambda_event(mapping, stack, ddb, streams, sqs) -> None:
    table = stack.table("JobsTable")
    put_jobs(ddb, table.name, "job-1")
    ddb.update_item(
        TableName=table.name,
        Key={"job_id": {"S": "job-1"}},
        UpdateExpression="SET #a = :a",  # still QUEUED, not dispatched: passes the template's filter
        ExpressionAttributeNames={"#a": "attempt"},
        ExpressionAttributeValues={":a": {"N": "1"}},
    )
    fn = Recorder()

    delivered = StreamPoller(mapping, fn, streams, sqs).poll_once()

    assert delivered == 2
    insert, modify = fn.events[0]["Records"]
    assert set(insert) == {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb", "eventSourceARN"}
    assert insert["eventName"] == "INSERT" and modify["eventName"] == "MODIFY"
    assert insert["eventVersion"] == "1.1"
    assert insert["eventSource"] == "aws:dynamodb"
    assert insert["awsRegion"] == "us-east-1"
    assert insert["eventSourceARN"] == table.stream_arn
    record = insert["dynamodb"]
    assert isinstance(record["ApproximateCreationDateTime"], int)
    assert abs(record["ApproximateCreationDateTime"] - time.time()) < 120
    assert record["Keys"] == {"job_id": {"S": "job-1"}}
    assert record["NewImage"] == {"job_id": {"S": "job-1"}, "state": {"S": "QUEUED"}, "attempt": {"N": "0"}}
    assert "OldImage" not in record
    assert record["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(record["SequenceNumber"], str) and isinstance(record["SizeBytes"], int)
    assert modify["dynamodb"]["OldImage"]["attempt"] == {"N": "0"}
    assert modify["dynamodb"]["NewImage"]["attempt"] == {"N": "1"}
    assert int(modify["dynamodb"]["SequenceNumber"]) > int(record["SequenceNumber"])


def test_nothing_new_means_no_invocation(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "job-1")
    fn = Recorder()
    poller = StreamPoller(mapping, fn, streams, sqs)

    assert poller.poll_once() == 1
    assert poller.poll_once() == 0
    assert len(fn.events) == 1


def test_the_templates_filter_passes_only_records_that_call_for_a_message(mapping, stack, ddb, streams, sqs) -> None:
    table = stack.table("JobsTable").name
    put_jobs(ddb, table, "job-q")
    key = {"job_id": {"S": "job-q"}}
    # The bridge's own write (dispatched), then a claim (RUNNING): neither calls for a message.
    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET dispatched_at = :v",
                    ExpressionAttributeValues={":v": {"S": "2026-01-01T00:00:00.000Z"}})
    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #s = :v REMOVE dispatched_at",
                    ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":v": {"S": "RUNNING"}})
    fn = Recorder()

    StreamPoller(mapping, fn, streams, sqs).poll_once()

    records = [r for event in fn.events for r in event["Records"]]
    assert [r["eventName"] for r in records] == ["INSERT"], "dispatched and RUNNING images must be filtered out"


def test_the_templates_filter_drops_removes(mapping, stack, ddb, streams, sqs) -> None:
    table = stack.table("JobsTable").name
    put_jobs(ddb, table, "job-1")
    ddb.delete_item(TableName=table, Key={"job_id": {"S": "job-1"}})
    fn = Recorder()
    poller = StreamPoller(mapping, fn, streams, sqs)

    poller.poll_once()
    poller.poll_once()

    assert [r["eventName"] for e in fn.events for r in e["Records"]] == ["INSERT"]


def test_batch_size_limits_each_invocation(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "a", "b", "c", "d", "e")
    fn = Recorder()
    poller = StreamPoller(dataclasses.replace(mapping, batch_size=2), fn, streams, sqs)

    while poller.poll_once():
        pass

    assert [len(e["Records"]) for e in fn.events] == [2, 2, 1]
    assert [fn.job_ids(i) for i in range(3)] == [["a", "b"], ["c", "d"], ["e"]]


def test_a_reported_failure_is_redelivered_from_its_sequence_number(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "a", "b", "c")

    def respond(event: dict[str, Any], call: int) -> Any:
        if call == 1:  # "b" failed: Lambda retries from b, keeping per-item order
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    fn = Recorder(respond)
    poller = StreamPoller(mapping, fn, streams, sqs)

    poller.poll_once()
    poller.poll_once()
    poller.poll_once()

    assert len(fn.events) == 2
    assert fn.job_ids(0) == ["a", "b", "c"]
    assert fn.job_ids(1) == ["b", "c"]


def test_the_lowest_reported_sequence_number_is_the_checkpoint(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "a", "b", "c")

    def respond(event: dict[str, Any], call: int) -> Any:
        if call == 1:
            seqs = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
            return {"batchItemFailures": [{"itemIdentifier": seqs[2]}, {"itemIdentifier": seqs[1]}]}
        return None

    fn = Recorder(respond)
    poller = StreamPoller(mapping, fn, streams, sqs)
    poller.poll_once()
    poller.poll_once()

    assert fn.job_ids(1) == ["b", "c"]


def test_partial_responses_are_ignored_without_report_batch_item_failures(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "a", "b")
    fn = Recorder(lambda event, call: {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["dynamodb"]["SequenceNumber"]}]})
    poller = StreamPoller(dataclasses.replace(mapping, report_batch_item_failures=False), fn, streams, sqs)

    poller.poll_once()
    poller.poll_once()

    assert len(fn.events) == 1


def test_an_invalid_item_identifier_fails_the_whole_batch(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "a", "b")
    fn = Recorder(lambda event, call: {"batchItemFailures": [{"itemIdentifier": ""}]} if call == 1 else None)
    no_bisect = dataclasses.replace(mapping, bisect_batch_on_function_error=False)
    poller = StreamPoller(no_bisect, fn, streams, sqs)

    poller.poll_once()
    poller.poll_once()

    assert fn.job_ids(1) == ["a", "b"]


def test_an_error_bisects_then_exhausted_retries_go_to_the_failure_queue(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "a", "poison", "c", "d")

    def respond(event: dict[str, Any], call: int) -> Any:
        if any(r["dynamodb"]["Keys"]["job_id"]["S"] == "poison" for r in event["Records"]):
            raise RuntimeError("cannot handle poison")
        return None

    fn = Recorder(respond)
    poller = StreamPoller(dataclasses.replace(mapping, maximum_retry_attempts=2), fn, streams, sqs)

    for _ in range(20):
        poller.poll_once()

    calls = [fn.job_ids(i) for i in range(len(fn.events))]
    # Bisect: [a poison c d] -> [a poison] -> [a] ok -> [poison] x3 (1 try + 2 retries) -> [c d]
    assert calls == [
        ["a", "poison", "c", "d"],
        ["a", "poison"],
        ["a"],
        ["poison"],
        ["poison"],
        ["poison"],
        ["c", "d"],
    ]
    failures_url = stack.queue("BridgeFailureQueue").url
    messages = sqs.receive_message(QueueUrl=failures_url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["requestContext"]["approximateInvokeCount"] == 3
    assert body["responseContext"]["functionError"] == "Unhandled"
    info = body["DDBStreamBatchInfo"]
    assert info["streamArn"] == stack.table("JobsTable").stream_arn
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"]


def test_run_delivers_until_shutdown(mapping, stack, ddb, streams, sqs) -> None:
    fn = Recorder()
    poller = StreamPoller(mapping, fn, streams, sqs, idle_sleep=0.05)
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        put_jobs(ddb, stack.table("JobsTable").name, "live-1")
        deadline = time.monotonic() + 10
        while not fn.events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.shutdown()
        poller.shutdown()  # idempotent
        thread.join(5)

    assert not thread.is_alive()
    assert fn.job_ids(0) == ["live-1"]


def test_failed_batches_are_retried_at_the_idle_pace_not_in_a_hot_loop(mapping, stack, ddb, streams, sqs) -> None:
    put_jobs(ddb, stack.table("JobsTable").name, "poison")

    def respond(event: dict[str, Any], call: int) -> Any:
        raise RuntimeError("always fails")

    fn = Recorder(respond)
    forever = dataclasses.replace(mapping, maximum_retry_attempts=-1)
    poller = StreamPoller(forever, fn, streams, sqs, idle_sleep=0.1)
    thread = threading.Thread(target=poller.run)
    thread.start()
    time.sleep(1.0)
    poller.shutdown()
    thread.join(5)

    assert 3 <= len(fn.events) <= 15  # about one try per idle interval
    assert all(fn.job_ids(i) == ["poison"] for i in range(len(fn.events)))
