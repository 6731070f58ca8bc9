"""jobbridge_local.sqs_poller against moto server: Lambda's SQS event source mapping, emulated.

Each test gets template.yaml's queues under a stack name of its own; the mapping settings come from
WorkerFunction's SQS event in the template (changed with dataclasses.replace where a case needs).
The function is a fake that records what it is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from typing import Any, Callable

import pytest

from jobbridge_local.event_filter import parse_filters
from jobbridge_local.sqs_poller import SqsMapping, SqsPoller

pytestmark = pytest.mark.integration

QUEUE = "PublicLambdaQueue"


class Recorder:
    """A fake function: records events (as JSON, as Lambda sends them), answers with ``respond``."""

    def __init__(self, respond: Callable[[dict[str, Any], int], Any] | None = None):
        self.events: list[dict[str, Any]] = []
        self.respond = respond or (lambda event, call: None)
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> Any:
        with self._lock:
            self.events.append(json.loads(json.dumps(event)))
            call = len(self.events)
        return self.respond(event, call)

    def bodies(self, call: int = 0) -> list[str]:
        return [r["body"] for r in self.events[call]["Records"]]


def mapping_of(stack: Any, **changes: Any) -> SqsMapping:
    (source,) = stack.event_sources("WorkerFunction", "SQS")
    return dataclasses.replace(SqsMapping.from_event_source(source, stack.queue_url(QUEUE)), **changes)


def send(stack: Any, *bodies: str, **attributes: str) -> None:
    sqs = stack.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=body, MessageAttributes={
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()})


def counts(stack: Any) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(QUEUE),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_the_template_settings_are_the_mappings(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=4, WorkerBatchingWindow=2, WorkerMaximumConcurrency=3)

    mapping = mapping_of(stack)

    assert mapping.queue_arn == stack.resources.queue(QUEUE).arn
    assert (mapping.batch_size, mapping.maximum_batching_window_s, mapping.concurrency) == (4, 2, 3)
    assert mapping.report_batch_item_failures is True


def test_a_message_arrives_as_a_real_shaped_lambda_record(template_stack) -> None:
    stack = template_stack()
    send(stack, '{"job_id":"job-1"}', job_id="job-1")
    fn = Recorder()

    result = SqsPoller(mapping_of(stack), fn, stack.client("sqs"), wait_time_s=1).poll_once()

    (record,) = fn.events[0]["Records"]
    assert list(record) == ["messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                            "md5OfMessageAttributes", "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"]
    assert record["body"] == '{"job_id":"job-1"}'
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert set(record["attributes"]) == {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                         "ApproximateFirstReceiveTimestamp"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert all(isinstance(v, str) for v in record["attributes"].values())
    assert record["messageAttributes"] == {"job_id": {"stringValue": "job-1", "stringListValues": [],
                                                      "binaryListValues": [], "dataType": "String"}}
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == (
        "aws:sqs", stack.resources.queue(QUEUE).arn, "us-east-1")
    assert result.deleted == [record["messageId"]]
    assert counts(stack) == (0, 0)


def test_a_partial_batch_response_keeps_only_the_failed_messages(template_stack) -> None:
    stack = template_stack(PublicLambdaVisibilityTimeout=1, WorkerBatchSize=3)
    send(stack, "a", "b", "c")

    def respond(event: dict[str, Any], call: int) -> Any:
        if call == 1:
            failed = next(r["messageId"] for r in event["Records"] if r["body"] == "b")
            return {"batchItemFailures": [{"itemIdentifier": failed}]}
        return {"batchItemFailures": []}

    fn = Recorder(respond)
    poller = SqsPoller(mapping_of(stack), fn, stack.client("sqs"), wait_time_s=2)

    first = poller.poll_once()
    assert len(first.deleted) == 2 and len(first.failed) == 1
    assert counts(stack) == (0, 1)  # "b" is in flight until its visibility timeout ends
    poller.poll_once()  # the long poll gets "b" back once the visibility timeout is over

    assert sorted(fn.bodies(0)) == ["a", "b", "c"]
    assert fn.bodies(1) == ["b"]
    assert fn.events[1]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert counts(stack) == (0, 0)


@pytest.mark.parametrize("response", [
    {"batchItemFailures": [{"itemIdentifier": ""}]},
    {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]},
    {"batchItemFailures": [{"id": "wrong key"}]},
])
def test_an_invalid_partial_response_fails_the_whole_batch(template_stack, response: dict[str, Any]) -> None:
    stack = template_stack(WorkerBatchSize=2)
    send(stack, "a", "b")

    result = SqsPoller(mapping_of(stack), Recorder(lambda e, c: response), stack.client("sqs"),
                       wait_time_s=1).poll_once()

    assert result.deleted == [] and len(result.failed) == 2
    assert result.function_error is not None and "invalid batchItemFailures" in result.function_error
    assert counts(stack) == (0, 2)


def test_an_exception_fails_the_whole_batch(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=2)
    send(stack, "a", "b")

    def explode(event: dict[str, Any], call: int) -> Any:
        raise RuntimeError("boom")

    result = SqsPoller(mapping_of(stack), Recorder(explode), stack.client("sqs"), wait_time_s=1).poll_once()

    assert result.deleted == [] and len(result.failed) == 2
    assert result.function_error == "RuntimeError: boom"
    assert counts(stack) == (0, 2)


def test_a_partial_response_is_ignored_without_report_batch_item_failures(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=2)
    send(stack, "a", "b")
    fn = Recorder(lambda e, c: {"batchItemFailures": [{"itemIdentifier": e["Records"][0]["messageId"]}]})

    result = SqsPoller(mapping_of(stack, report_batch_item_failures=False), fn, stack.client("sqs"),
                       wait_time_s=1).poll_once()

    assert len(result.deleted) == 2 and result.failed == []
    assert counts(stack) == (0, 0)


def test_batch_size_bounds_an_invocation_and_the_window_fills_past_ten(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=3)
    send(stack, *[f"m{n}" for n in range(12)])
    fn = Recorder()

    no_window = SqsPoller(mapping_of(stack), fn, stack.client("sqs"), wait_time_s=1).poll_once()
    # a window lets one invocation gather more than one ReceiveMessage call can return (10)
    windowed = SqsPoller(mapping_of(stack, batch_size=20, maximum_batching_window_s=1), fn, stack.client("sqs"),
                         wait_time_s=1).poll_once()

    assert 1 <= no_window.invoked <= 3
    assert windowed.invoked == 12 - no_window.invoked
    assert sorted(fn.bodies(0) + fn.bodies(1)) == sorted(f"m{n}" for n in range(12))
    assert counts(stack) == (0, 0)


def test_messages_no_filter_matches_are_deleted_without_an_invocation(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=3)
    send(stack, '{"kind": "wanted"}', '{"kind": "other"}', "not json")
    fn = Recorder()
    filters = parse_filters([{"Pattern": '{"body": {"kind": ["wanted"]}}'}])

    result = SqsPoller(mapping_of(stack, filters=filters), fn, stack.client("sqs"), wait_time_s=1).poll_once()

    assert fn.bodies(0) == ['{"kind": "wanted"}']
    assert len(result.filtered) == 2 and len(result.deleted) == 1
    assert counts(stack) == (0, 0)


def test_run_processes_up_to_maximum_concurrency_batches_at_once(template_stack) -> None:
    stack = template_stack(WorkerMaximumConcurrency=2)  # WorkerBatchSize 1: one message per batch
    send(stack, "a", "b")
    together = threading.Barrier(2, timeout=15)  # passes only if two invocations are in at once

    def meet(event: dict[str, Any], call: int) -> Any:
        together.wait()
        return None

    fn = Recorder(meet)
    poller = SqsPoller(mapping_of(stack), fn, stack.client("sqs"), wait_time_s=1)
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        for _ in range(100):
            if counts(stack) == (0, 0) and len(fn.events) == 2:
                break
            threading.Event().wait(0.1)
    finally:
        poller.shutdown()
        poller.shutdown()  # idempotent
        thread.join(15)

    assert not thread.is_alive()
    assert not together.broken
    assert sorted(b for i in range(2) for b in fn.bodies(i)) == ["a", "b"]
    assert counts(stack) == (0, 0)


def test_a_batch_received_after_shutdown_is_handed_back_at_once(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=2)
    send(stack, "a", "b")
    sqs = stack.client("sqs")
    fn = Recorder()

    class ShutdownDuringReceive:
        """The SQS client, but shutdown is asked while the long poll is out."""

        def __getattr__(self, name: str) -> Any:
            return getattr(sqs, name)

        def receive_message(self, **kwargs: Any) -> Any:
            out = sqs.receive_message(**kwargs)
            poller.shutdown()
            return out

    poller = SqsPoller(mapping_of(stack), fn, ShutdownDuringReceive(), wait_time_s=1)
    result = poller.poll_once()

    assert fn.events == []
    assert len(result.released) == 2
    assert counts(stack) == (2, 0)  # visible again now, not after the visibility timeout
