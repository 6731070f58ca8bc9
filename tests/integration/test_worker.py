"""WorkerFunction in this process against moto server: the public-lambda queue's messages, delivered
by the local SQS event source mapping (jobbridge_local.sqs_poller) with WorkerFunction's settings
from template.yaml, run through the real handler to a final state.

Jobs are submitted with the core's JobService (as the API does) and their messages sent as the
bridge sends them; the bridge itself does not run, so each test decides which messages exist.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from events import sqs_event, sqs_record
from jobbridge.dispatch import Dispatch, Dispatcher
from jobbridge.ids import parse_iso
from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import Job, JobCreate, Route, State
from jobbridge.queues import Queue
from jobbridge.registry import load_registry
from jobbridge.runner import Runner, RunnerConfig
from jobbridge.service import JobService
from jobbridge.store import JobStore
from jobbridge.worker import QueueWorker
from jobbridge_local.invoke import LambdaContext
from jobbridge_local.sqs_poller import BatchResult, SqsMapping, SqsPoller

pytestmark = pytest.mark.integration

REGISTRY = load_registry()
WORKER_QUEUE = "PublicLambdaQueue"


# --- helpers ---------------------------------------------------------------------------------------


def store_of(stack: Any, clock: Callable[[], datetime] | None = None) -> JobStore:
    if clock is None:
        return JobStore(stack.table_name, client=stack.client("dynamodb"))
    return JobStore(stack.table_name, client=stack.client("dynamodb"), clock=clock)


def submit(stack: Any, job_type: str, params: dict[str, Any], tenant: str = "acme") -> Job:
    """A QUEUED job on the lambda route, recorded as the API records it."""
    job = JobService(store_of(stack), REGISTRY).submit(tenant, JobCreate(type=job_type, params=params,
                                                                         target="public")).job
    assert job.route is Route.LAMBDA
    return job


def dispatch(stack: Any, job: Job, *, attempt: int | None = None, **overrides: Any) -> None:
    """Send the job's message as the bridge does (``overrides`` change the message's fields)."""
    fields = {
        "record_id": job.job_id,
        "job_id": job.job_id,
        "route": job.route,
        "attempt": job.attempt if attempt is None else attempt,
        "correlation_id": job.correlation_id,
        "timeout_s": job.timeout_s,
        "expected_runtime_s": job.requirements.expected_runtime_s,
        **overrides,
    }
    queues = {route: stack.queue_url(name) for route, name in
              ((Route.LAMBDA, "PublicLambdaQueue"), (Route.BATCH, "PublicBatchQueue"), (Route.PRIVATE, "PrivateQueue"))}
    sent, failed = Dispatcher(queues, client=stack.client("sqs")).send([Dispatch(**fields)])
    assert sent and not failed


def worker_poller(stack: Any, invoke: Callable[[dict[str, Any]], Any] | None = None) -> SqsPoller:
    """The local event source mapping of WorkerFunction's SQS event (BatchSize and the rest from
    template.yaml), invoking the real handler in this process unless ``invoke`` says otherwise."""
    (source,) = stack.event_sources("WorkerFunction", "SQS")
    mapping = SqsMapping.from_event_source(source, stack.queue_url(WORKER_QUEUE))
    return SqsPoller(mapping, invoke or stack.function("worker").invoke, stack.client("sqs"), wait_time_s=1)


def poll_until(poller: SqsPoller, done: Callable[[], bool], polls: int = 20) -> list[BatchResult]:
    results = []
    for _ in range(polls):
        if done():
            return results
        results.append(poller.poll_once())
    assert done(), f"not done after {polls} polls: {results}"
    return results


def messages_left(stack: Any, logical_id: str = WORKER_QUEUE) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def events_of(job: Job) -> list[str]:
    return [entry.event for entry in job.history]


def worker_module(stack: Any) -> Any:
    stack.function("worker").handler  # imports the handler module once per process, as Lambda does
    return sys.modules["jobbridge_fn_WorkerFunction"]


def use_worker(monkeypatch: pytest.MonkeyPatch, stack: Any, *, rng: Callable[[], float],
               clock: Callable[[], datetime]) -> None:
    """The handler's wiring with a chosen backoff jitter and clock (everything else as _worker builds it)."""
    store = store_of(stack, clock)
    runner = Runner(JobLifecycle(store, REGISTRY, rng=rng), REGISTRY, RunnerConfig(owner="lambda"))
    worker = QueueWorker(runner, Queue(stack.queue_url(WORKER_QUEUE), client=stack.client("sqs")))
    monkeypatch.setattr(worker_module(stack), "_worker", lambda: worker)


class ScriptedContext(LambdaContext):
    """A LambdaContext whose remaining time (seconds) is whatever ``remaining_s()`` says."""

    def __init__(self, stack: Any, remaining_s: Callable[[], float]):
        super().__init__(stack.function("worker").spec)
        self.remaining_s = remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_s() * 1000)


class FrozenClock:
    """The store's clock, still: ``not_before`` minus it is exactly the backoff drawn."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


# --- jobs that succeed -----------------------------------------------------------------------------


def test_echo_and_sleep_reach_succeeded_through_the_worker(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    echo = submit(stack, "echo", {"hello": "world", "n": 3})
    sleep = submit(stack, "sleep", {"seconds": 0.4, "steps": 2})
    dispatch(stack, echo)
    dispatch(stack, sleep)
    poller = worker_poller(stack)

    results = poll_until(poller, lambda: all(store.get(j.job_id).state.is_final for j in (echo, sleep)))

    done_echo, done_sleep = store.get(echo.job_id), store.get(sleep.job_id)
    assert done_echo.state is State.SUCCEEDED
    assert done_echo.result == {"hello": "world", "n": 3}
    assert done_sleep.state is State.SUCCEEDED
    assert done_sleep.result == {"slept_s": 0.4, "steps": 2}
    assert done_sleep.progress is not None
    assert (done_sleep.progress.fraction, done_sleep.progress.message) == (1.0, "step 2/2")
    for job in (done_echo, done_sleep):
        assert events_of(job) == ["submitted", "claimed", "succeeded"]
        assert job.attempt == 1 and job.error is None and job.lease_owner == "lambda"
    # WorkerBatchSize defaults to 1: one invocation per job, each message deleted after it
    assert sorted(r.invoked for r in results if r.invoked) == [1, 1]
    assert all(not r.failed for r in results)
    assert messages_left(stack) == 0


# --- failures, retries and backoff -----------------------------------------------------------------


def test_a_retryable_failure_is_retried_with_growing_backoff_then_failed(template_stack, monkeypatch) -> None:
    stack = template_stack()
    clock = FrozenClock()
    use_worker(monkeypatch, stack, rng=lambda: 1.0, clock=clock)  # jitter at its ceiling
    store = store_of(stack)
    job = submit(stack, "fail", {"message": "flaky dependency", "retryable": True})
    poller = worker_poller(stack)
    delays = []

    for attempt in range(job.max_attempts):
        dispatch(stack, job, attempt=attempt)  # the bridge sends each retry's message
        poll_until(poller, lambda: store.get(job.job_id).attempt == attempt + 1
                   and store.get(job.job_id).state is not State.RUNNING)
        current = store.get(job.job_id)
        if current.state is State.QUEUED:
            delays.append((parse_iso(current.not_before) - clock.now).total_seconds())

    final = store.get(job.job_id)
    # fail's backoff is Backoff(base 1 s, max 30 s): ceilings 1 s then 2 s, and rng 1.0 draws them
    assert delays == [1.0, 2.0]
    assert final.state is State.FAILED
    assert final.attempt == 3 == final.max_attempts
    assert final.error is not None
    assert (final.error.type, final.error.message, final.error.retryable, final.error.attempt) == (
        "RetryableError", "flaky dependency", True, 3)
    assert events_of(final) == ["submitted", "claimed", "retry_scheduled", "claimed", "retry_scheduled",
                                "claimed", "failed"]
    assert messages_left(stack) == 0


def test_a_permanent_failure_fails_on_the_first_attempt(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "fail", {"message": "bad input", "retryable": False})
    dispatch(stack, job)

    poll_until(worker_poller(stack), lambda: store.get(job.job_id).state.is_final)

    final = store.get(job.job_id)
    assert final.state is State.FAILED
    assert final.attempt == 1
    assert final.error is not None
    assert (final.error.type, final.error.message, final.error.retryable, final.error.attempt) == (
        "PermanentError", "bad input", False, 1)
    assert events_of(final) == ["submitted", "claimed", "failed"]
    assert messages_left(stack) == 0


# --- at-least-once delivery --------------------------------------------------------------------------


def test_the_same_message_twice_in_one_batch_runs_the_job_once(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=2)
    store = store_of(stack)
    job = submit(stack, "echo", {"once": True})
    dispatch(stack, job)
    dispatch(stack, job)  # SQS delivers at least once: a duplicate of the same message

    results = poll_until(worker_poller(stack), lambda: messages_left(stack) == 0)

    final = store.get(job.job_id)
    assert [r.invoked for r in results if r.invoked] == [2]  # both copies in one invocation
    assert final.state is State.SUCCEEDED and final.result == {"once": True}
    assert events_of(final).count("claimed") == 1 and final.attempt == 1
    assert all(not r.failed for r in results)  # the duplicate is acknowledged, not retried


def test_the_same_message_in_a_later_batch_changes_nothing(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"once": True})
    dispatch(stack, job)
    poller = worker_poller(stack)
    poll_until(poller, lambda: store.get(job.job_id).state.is_final)
    settled = store.get(job.job_id)

    dispatch(stack, job)  # redelivered after the job finished
    result = poller.poll_once()

    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed
    assert store.get(job.job_id) == settled
    assert events_of(settled).count("claimed") == 1
    assert messages_left(stack) == 0


# --- time: the invocation's deadline ---------------------------------------------------------------------


def test_a_worker_out_of_time_mid_batch_hands_back_the_rest_and_loses_no_job(template_stack) -> None:
    stack = template_stack(WorkerBatchSize=3)
    store = store_of(stack)
    jobs = [submit(stack, "echo", {"n": n}) for n in range(3)]
    for job in jobs:
        dispatch(stack, job)  # echo may take 60 s (its timeout): each needs 60 s + the 10 s margin
    function = stack.function("worker")

    def remaining_s() -> float:
        # The invocation has 100 s until its first job has run, then 30 s.
        started = sum(store.get(j.job_id).attempt for j in jobs)
        return 100.0 if started == 0 else 30.0

    first = worker_poller(stack, invoke=lambda event: _invoke(function, event, ScriptedContext(stack, remaining_s)))

    handed_back = first.poll_once()

    # every record is acknowledged: the two that did not fit were handed back as fresh messages
    assert handed_back.invoked == 3
    assert len(handed_back.deleted) == 3 and not handed_back.failed
    waiting = [store.get(j.job_id) for j in jobs if store.get(j.job_id).state is State.QUEUED]
    assert len(waiting) == 2
    assert all(j.attempt == 0 and "claimed" not in events_of(j) for j in waiting)  # never started

    # the next invocation (a fresh 900 s) receives them at once, each as its first receive: a
    # hand-back spends none of the message's maxReceiveCount (WorkerBatchSize > 1 would otherwise
    # dead-letter a job handed back five times that never ran)
    seen = Recording(function.invoke)
    poll_until(worker_poller(stack, invoke=seen), lambda: all(store.get(j.job_id).state.is_final for j in jobs))
    firsts = {json.loads(r["body"])["job_id"]: r["attributes"]["ApproximateReceiveCount"]
              for e in seen.events for r in e["Records"]}
    assert firsts == {j.job_id: "1" for j in waiting}
    for job in jobs:
        final = store.get(job.job_id)
        assert final.state is State.SUCCEEDED
        assert events_of(final).count("claimed") == 1
    assert messages_left(stack) == 0


def test_a_job_started_with_too_little_time_fails_as_a_retryable_timeout_before_the_deadline(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "sleep", {"seconds": 60, "steps": 60})
    # The message claims one second (an expected runtime that was wrong): it fits 13 s - 10 s margin.
    dispatch(stack, job, expected_runtime_s=1)
    function = stack.function("worker")
    context = DeadlineContext(function.spec, seconds=13)

    poller = worker_poller(stack, invoke=lambda event: _invoke(function, event, context))
    result = poller.poll_once()

    requeued = store.get(job.job_id)
    assert context.remaining_at_return_s is not None and context.remaining_at_return_s > 0  # Lambda never cut it
    assert result.invoked == 1 and len(result.deleted) == 1 and not result.failed  # settled: acknowledged
    assert requeued.state is State.QUEUED and requeued.attempt == 1  # a retry is scheduled
    assert requeued.error is not None
    assert (requeued.error.type, requeued.error.retryable, requeued.error.attempt) == ("Timeout", True, 1)
    assert events_of(requeued) == ["submitted", "claimed", "retry_scheduled"]


def test_a_job_that_may_need_the_whole_timeout_is_started_by_a_fresh_invocation(template_stack) -> None:
    # A job type with timeout_s 900 (the registry's default) on a 900 s worker: no invocation ever
    # has 900 s + the margin, so handing it back would only count receives until the DLQ.
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"long": "maybe"})
    dispatch(stack, job, timeout_s=900, expected_runtime_s=None)

    result = worker_poller(stack).poll_once()

    assert result.invoked == 1 and not result.failed
    assert store.get(job.job_id).state is State.SUCCEEDED


def test_a_fresh_invocation_starts_a_job_that_needs_all_its_time_whatever_the_clock_does_between_readings(
        template_stack) -> None:
    # The remaining time moves on by a millisecond between any two readings (a busy machine): the
    # decision must not compare the invocation's first reading with a later one.
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"long": "maybe"})
    dispatch(stack, job, timeout_s=900, expected_runtime_s=None)
    readings = iter(900.0 - 0.001 * n for n in range(1_000_000))
    function = stack.function("worker")

    result = worker_poller(stack, invoke=lambda event: _invoke(
        function, event, ScriptedContext(stack, lambda: next(readings)))).poll_once()

    assert result.invoked == 1 and not result.failed
    assert store.get(job.job_id).state is State.SUCCEEDED


def test_the_worker_events_file_is_a_batch_the_handler_takes(template_stack) -> None:
    # events/sqs_worker_batch.json as is (sam local invoke uses it): its jobs do not exist here, so
    # both claims are refused and both records acknowledged.
    from events import load_event

    stack = template_stack()
    response = stack.function("worker").invoke(load_event("sqs_worker_batch"))

    assert response == {"batchItemFailures": []}


def test_a_malformed_record_alone_is_reported_failed(template_stack) -> None:
    stack = template_stack()
    store = store_of(stack)
    job = submit(stack, "echo", {"ok": True})
    sqs = stack.client("sqs")
    url = stack.queue_url(WORKER_QUEUE)
    for body in ({"job_id": job.job_id, "route": "lambda", "attempt": 0, "timeout_s": 60}, "not json"):
        sqs.send_message(QueueUrl=url, MessageBody=body if isinstance(body, str) else json.dumps(body))
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert len(received) == 2
    records = [sqs_record(m["Body"], receipt_handle=m["ReceiptHandle"], message_id=m["MessageId"]) for m in received]

    response = stack.function("worker").invoke(sqs_event(*records))

    bad = next(r["messageId"] for r in records if r["body"] == "not json")
    assert response == {"batchItemFailures": [{"itemIdentifier": bad}]}
    assert store.get(job.job_id).state is State.SUCCEEDED


# --- the route fence --------------------------------------------------------------------------------------


def test_a_private_job_delivered_to_the_lambda_worker_is_refused_and_stays_queued(template_stack, caplog,
                                                                                 capsys) -> None:
    # given a restricted genome_align job (private only) and two forged messages for it on the
    # public-lambda queue: one naming its real route, one lying that it is a lambda job
    stack = template_stack()
    store = store_of(stack)
    job = JobService(store, REGISTRY).submit("acme", JobCreate(type="genome_align",
                                                               params={"sample_id": "s-1", "duration_s": 0})).job
    assert job.route is Route.PRIVATE
    sqs = stack.client("sqs")
    for route in ("private", "lambda"):
        body = {"job_id": job.job_id, "route": route, "attempt": 0, "timeout_s": 60}
        sqs.send_message(QueueUrl=stack.queue_url(WORKER_QUEUE), MessageBody=json.dumps(body))

    # when the Lambda worker receives them
    with caplog.at_level("WARNING"):
        poll_until(worker_poller(stack), lambda: messages_left(stack) == 0)

    # then neither ran it: the job is QUEUED, untouched, and each refusal was logged and counted
    current = store.get(job.job_id)
    assert current.state is State.QUEUED and current.attempt == 0 and current.lease_owner is None
    assert events_of(current) == ["submitted"]
    refusals = [r for r in caplog.records if "route fence" in r.getMessage()]
    assert len(refusals) == 2 and all(r.levelname == "WARNING" for r in refusals)
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum(sum(m.get("jobs_refused", [])) for m in metrics) == 2


# --- support ---------------------------------------------------------------------------------------------


class Recording:
    """Wraps a function's invoke: records each event, returns the function's response."""

    def __init__(self, invoke: Any):
        self.invoke = invoke
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return self.invoke(event)


class DeadlineContext(LambdaContext):
    """A LambdaContext of ``seconds`` from now that notes the time left when the handler returns."""

    def __init__(self, spec: Any, seconds: float):
        super().__init__(spec)
        self._deadline = time.monotonic() + seconds
        self.remaining_at_return_s: float | None = None


def _invoke(function: Any, event: dict[str, Any], context: LambdaContext) -> Any:
    """Invoke the handler with a context of the test's own, under the function's environment."""
    from jobbridge_local.invoke import environment

    handler = function.handler
    with environment(function.environment):
        response = handler(event, context)
    if isinstance(context, DeadlineContext):
        context.remaining_at_return_s = context.get_remaining_time_in_millis() / 1000
    return response

