"""DeadLetterFunction in this process against moto server, fed by the local SQS event source mappings
of template.yaml: a message the worker cannot handle goes to the DLQ after MaxReceiveCount receives
(SQS's redrive policy, which moto applies on receive as SQS does) and its job is marked FAILED.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from events import load_event
from jobbridge.models import Job, JobCreate, Route, State
from jobbridge.registry import load_registry
from jobbridge.service import JobService
from jobbridge.store import JobStore
from jobbridge_local.sqs_poller import SqsMapping, SqsPoller

pytestmark = pytest.mark.integration

REGISTRY = load_registry()
EVENTS_JOB_ID = "job_01kak3r0mvb7x2q9f4c8d6e5ha"  # the job events/sqs_dead_letter.json names


def store_of(stack: Any) -> JobStore:
    return JobStore(stack.table_name, client=stack.client("dynamodb"))


def submit(stack: Any, job_type: str = "echo", params: dict[str, Any] | None = None) -> Job:
    request = JobCreate(type=job_type, params=params or {"hello": "dlq"}, target="public")
    job = JobService(store_of(stack), REGISTRY).submit("acme", request).job
    assert job.route is Route.LAMBDA
    return job


class Recording:
    """Wraps a function's invoke: records each event, returns the function's response."""

    def __init__(self, invoke: Any):
        self.invoke = invoke
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return self.invoke(event)


def poller(stack: Any, function: str, queue: str, invoke: Any) -> SqsPoller:
    """The local event source mapping of ``function``'s SQS event on ``queue`` (template settings)."""
    source = next(s for s in stack.event_sources(function, "SQS") if s.name == queue)
    mapping = SqsMapping.from_event_source(source, stack.queue_url(queue))
    return SqsPoller(mapping, invoke, stack.client("sqs"), wait_time_s=1)


def count(stack: Any, queue: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_a_poison_message_reaches_the_dlq_after_max_receive_count_and_its_job_fails(template_stack) -> None:
    # A failed record returns after the queue's visibility timeout: 1 s here instead of 5400.
    stack = template_stack(PublicLambdaVisibilityTimeout=1)
    store = store_of(stack)
    job = submit(stack)
    max_receive_count = int(stack.template.resolver(stack.context).ref("MaxReceiveCount"))
    poison = {"job_id": job.job_id, "route": "lambda", "attempt": 0, "timeout_s": "soon"}  # not a number
    stack.client("sqs").send_message(QueueUrl=stack.queue_url("PublicLambdaQueue"), MessageBody=json.dumps(poison))
    worker = Recording(stack.function("worker").invoke)
    worker_mapping = poller(stack, "WorkerFunction", "PublicLambdaQueue", worker)

    for _ in range(60):
        if count(stack, "PublicLambdaDLQ"):
            break
        result = worker_mapping.poll_once()
        assert not result.deleted  # never acknowledged
    receive_counts = [int(e["Records"][0]["attributes"]["ApproximateReceiveCount"]) for e in worker.events]

    assert receive_counts == list(range(1, max_receive_count + 1))  # then SQS moved it
    assert count(stack, "PublicLambdaQueue") == 0 and count(stack, "PublicLambdaDLQ") == 1
    assert store.get(job.job_id).state is State.QUEUED  # the worker never claimed it

    dead_letters = Recording(stack.function("dead_letter").invoke)
    result = poller(stack, "DeadLetterFunction", "PublicLambdaDLQ", dead_letters).poll_once()

    (record,) = dead_letters.events[0]["Records"]
    receives = int(record["attributes"]["ApproximateReceiveCount"])
    failed = store.get(job.job_id)
    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed
    assert receives >= max_receive_count
    assert record["eventSourceARN"] == stack.resources.queue("PublicLambdaDLQ").arn
    assert failed.state is State.FAILED
    assert failed.error is not None
    assert (failed.error.type, failed.error.retryable) == ("DeadLettered", False)
    assert f"after {receives} receives" in failed.error.message
    assert [h.event for h in failed.history] == ["submitted", "failed"]
    assert count(stack, "PublicLambdaDLQ") == 0


def test_a_dead_letter_for_a_final_job_changes_nothing(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack)
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url("PublicLambdaQueue"),
        MessageBody=json.dumps({"job_id": job.job_id, "route": "lambda", "attempt": 0, "timeout_s": 60}),
    )
    poller(stack, "WorkerFunction", "PublicLambdaQueue", stack.function("worker").invoke).poll_once()
    settled = store.get(job.job_id)
    assert settled.state is State.SUCCEEDED
    # A stale copy of its message dead-lettered meanwhile (e.g. a duplicate the worker kept failing on)
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url("PublicLambdaDLQ"),
        MessageBody=json.dumps({"job_id": job.job_id, "route": "lambda", "attempt": 0}),
    )

    result = poller(stack, "DeadLetterFunction", "PublicLambdaDLQ", stack.function("dead_letter").invoke).poll_once()

    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed
    assert store.get(job.job_id) == settled
    assert count(stack, "PublicLambdaDLQ") == 0


def test_the_dead_letter_events_file_fails_its_job_with_the_receive_count(template_stack) -> None:
    # events/sqs_dead_letter.json as sam local invoke would send it, for a job that exists here.
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack)
    store.create(job.model_copy(update={"job_id": EVENTS_JOB_ID}))
    event = load_event("sqs_dead_letter")

    response = stack.function("dead_letter").invoke(event)

    failed = store.get(EVENTS_JOB_ID)
    assert response == {"batchItemFailures": []}
    assert failed.state is State.FAILED and failed.error is not None
    assert failed.error.message == (
        "dead-lettered after 5 receives from arn:aws:sqs:us-east-1:123456789012:jobbridge-public-lambda-dlq")
    assert store.get(job.job_id).state is State.QUEUED  # only the job the letter names


@pytest.mark.parametrize("body", ["not json", json.dumps({"job_id": "job_0000000000000000000000none"})])
def test_an_unreadable_or_unknown_dead_letter_is_acknowledged(template_stack, body: str) -> None:
    stack = template_stack()
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.queue_url("PrivateDLQ"), MessageBody=body)

    result = poller(stack, "DeadLetterFunction", "PrivateDLQ", stack.function("dead_letter").invoke).poll_once()

    # nothing to fail, and retrying would not change that: the letter is dropped (and logged)
    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed
    assert count(stack, "PrivateDLQ") == 0


def test_a_stale_dead_letter_does_not_fail_a_job_another_worker_runs(template_stack) -> None:
    # given attempt 0's message claimed by a healthy worker (RUNNING, attempt 1) ...
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack)
    running = store.claim(job.job_id, "lambda:healthy", 60, expected_attempt=0)
    # ... and a duplicate of that message dead-lettered meanwhile (another worker kept failing on it)
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url("PublicLambdaDLQ"),
        MessageBody=json.dumps({"job_id": job.job_id, "route": "lambda", "attempt": 0}),
    )

    result = poller(stack, "DeadLetterFunction", "PublicLambdaDLQ", stack.function("dead_letter").invoke).poll_once()

    # then the letter is acknowledged and the running job is untouched
    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed
    assert store.get(job.job_id) == running


def test_a_dead_letter_naming_no_attempt_changes_nothing(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack)
    stack.client("sqs").send_message(QueueUrl=stack.queue_url("PublicLambdaDLQ"),
                                     MessageBody=json.dumps({"job_id": job.job_id, "attempt": "first"}))

    result = poller(stack, "DeadLetterFunction", "PublicLambdaDLQ", stack.function("dead_letter").invoke).poll_once()

    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed
    assert store.get(job.job_id) == job
