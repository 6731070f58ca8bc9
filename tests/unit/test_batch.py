"""jobbridge.batch without a network: the store is moto in process (tables from template.yaml), the
Batch API a fake that keeps the jobs it was asked to start, the events come from events/*.json.

Submission: one Batch job per attempt, whatever happens to the message (duplicates, a crashed
submitter, a stale redelivery). Events: the decision a container that ended without reporting
leads to (retry, FAILED, nothing), and that a duplicate event changes nothing.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from typing import Any, Callable

import pytest
from botocore.stub import Stubber

from events import load_event
from jobbridge import aws
from jobbridge.batch import (
    BatchApi,
    BatchJobToStop,
    BatchContainerLifecycle,
    BatchEvents,
    BatchRequestRejected,
    BatchSubmitter,
    BatchTarget,
    BatchTargets,
    ContainerSettings,
    EventOutcome,
    SubmissionInProgress,
    SubmitOutcome,
    batch_job_to_stop,
    batch_failure,
    batch_job_name,
    batch_owner,
    parse_batch_job_name,
)
from jobbridge.batch_entrypoint import EXIT_SETTLED, EXIT_USAGE, exit_code, main, run
from jobbridge.errors import DependencyUnavailable, InvalidTransition, StaleAttempt
from jobbridge.lifecycle import JobLifecycle
from jobbridge.messages import JobMessage
from jobbridge.models import Job, JobError, Requirements, Route, State
from jobbridge.queues import Queue
from jobbridge.registry import load_registry
from jobbridge.runner import Outcome

TARGETS = BatchTargets(cpu=BatchTarget("arn:aws:batch:us-east-1:123456789012:job-queue/cpu", "cpu-def:1"),
                       gpu=BatchTarget("arn:aws:batch:us-east-1:123456789012:job-queue/gpu", "gpu-def:1"))


class FakeBatch:
    """The BatchApi calls BatchSubmitter makes. ``fail_submit`` raises from SubmitJob, after Batch
    accepted the job (``accepted=True``: a timeout on the way back) or before."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.submits = 0
        self.fail_submit: tuple[Exception, bool] | None = None
        self.terminated: list[tuple[str, str]] = []
        self.on_submit: Callable[[], None] | None = None  # runs once Batch accepted the job

    def submit_job(self, **request: Any) -> dict[str, Any]:
        self.submits += 1
        job = {"jobId": str(uuid.uuid4()), "jobName": request["jobName"], "request": copy.deepcopy(request),
               "createdAt": self.submits}
        if self.fail_submit is not None:
            error, accepted = self.fail_submit
            self.fail_submit = None
            if accepted:
                self.jobs.append(job)
            raise error
        self.jobs.append(job)
        if self.on_submit is not None:
            self.on_submit()
        return {"jobId": job["jobId"], "jobName": job["jobName"], "jobArn": f"arn:aws:batch:::job/{job['jobId']}"}

    def find_jobs_named(self, job_queue: str, name: str) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j["jobName"] == name and j["request"]["jobQueue"] == job_queue]

    def terminate_job(self, batch_job_id: str, reason: str) -> None:
        self.terminated.append((batch_job_id, reason))

    def describe_job(self, batch_job_id: str) -> dict[str, Any] | None:
        """DescribeJobs of one job: its status (``status``, default RUNNABLE), or None once Batch forgot it."""
        job = next((j for j in self.jobs if j["jobId"] == batch_job_id), None)
        if job is None or job.get("forgotten"):
            return None
        return {"jobId": job["jobId"], "jobName": job["jobName"], "status": job.get("status", "RUNNABLE"),
                "statusReason": job.get("statusReason", ""), "attempts": [],
                "container": {"environment": job["request"]["containerOverrides"]["environment"]}}


class FakeQueue:
    def __init__(self) -> None:
        self.visibility: list[tuple[str, int]] = []
        self.sent: list[tuple[str, int]] = []

    def send(self, body: str, delay_s: int = 0) -> None:
        self.sent.append((body, delay_s))

    def send_again(self, message: JobMessage) -> int:
        return Queue.send_again(self, message)  # type: ignore[arg-type]  # the real policy over this fake

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.visibility.append((receipt_handle, seconds))


@pytest.fixture
def batch() -> FakeBatch:
    return FakeBatch()


@pytest.fixture
def submitter(store, batch) -> BatchSubmitter:
    return BatchSubmitter(store, TARGETS, batch=batch, queue=FakeQueue())


@pytest.fixture
def batch_job(store, make_job) -> Callable[..., Job]:
    """A stored QUEUED batch-route job (GPU unless said otherwise)."""

    def make(**overrides: Any) -> Job:
        values = {"type": "transcode", "params": {"video_id": "v1", "resolution": "8K"}, "route": Route.BATCH,
                  "requirements": Requirements(gpu=True, memory_mb=16384), "timeout_s": 14400,
                  "correlation_id": "corr-1"}
        job, created = store.create(make_job(**{**values, **overrides}))
        assert created
        return job

    return make


def message_for(job: Job, attempt: int = 0) -> JobMessage:
    return JobMessage(job_id=job.job_id, route=Route.BATCH, attempt=attempt, correlation_id=job.correlation_id,
                      timeout_s=job.timeout_s)


def env_of(request: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}


# --- names ---------------------------------------------------------------------------------------


def test_the_batch_job_name_is_deterministic_per_attempt_and_parses_back() -> None:
    assert batch_job_name("job_01abc", 0) == "jb-job_01abc-1"
    assert parse_batch_job_name(batch_job_name("job_01abc", 4)) == ("job_01abc", 4)
    assert parse_batch_job_name("nightly-report") is None
    assert parse_batch_job_name("jb-job_01abc-0") is None


# --- submission ------------------------------------------------------------------------------------


def test_a_gpu_job_gets_one_batch_job_on_the_gpu_queue_with_its_job_in_the_environment(submitter, batch, batch_job,
                                                                                       raw_item) -> None:
    job = batch_job()

    result = submitter.submit(message_for(job), "rh-1")

    assert result.outcome is SubmitOutcome.SUBMITTED
    (submitted,) = batch.jobs
    request = submitted["request"]
    assert request["jobName"] == f"jb-{job.job_id}-1"
    assert (request["jobQueue"], request["jobDefinition"]) == (TARGETS.gpu.job_queue, TARGETS.gpu.job_definition)
    assert env_of(request) == {"JOBBRIDGE_JOB_ID": job.job_id, "JOBBRIDGE_EXPECTED_ATTEMPT": "0",
                               "JOBBRIDGE_CORRELATION_ID": "corr-1"}
    assert request["timeout"] == {"attemptDurationSeconds": 14400 + 120}
    item = raw_item(job.job_id)
    assert item["batch_job_id"] == {"S": submitted["jobId"]}
    assert item["batch_attempt"] == {"N": "0"}
    assert "dispatched_at" in item  # the reservation proves delivery: the bridge must not send again
    assert item["state"] == {"S": "QUEUED"}


def test_a_cpu_job_goes_to_the_cpu_queue_with_at_least_batchs_minimum_timeout(submitter, batch, batch_job) -> None:
    job = batch_job(type="sleep", params={"seconds": 1200}, requirements=Requirements(), timeout_s=1)

    submitter.submit(message_for(job))

    request = batch.jobs[0]["request"]
    assert (request["jobQueue"], request["jobDefinition"]) == (TARGETS.cpu.job_queue, TARGETS.cpu.job_definition)
    assert request["timeout"]["attemptDurationSeconds"] >= 60


def resources_of(request: dict[str, Any]) -> dict[str, str]:
    return {r["type"]: r["value"] for r in request["containerOverrides"].get("resourceRequirements", [])}


def test_a_gpu_job_container_gets_its_gpu_and_the_memory_it_asked_for(submitter, batch, batch_job) -> None:
    job = batch_job(requirements=Requirements(gpu=True, memory_mb=30000))

    submitter.submit(message_for(job))

    assert resources_of(batch.jobs[0]["request"]) == {"GPU": "1", "MEMORY": "30000"}


@pytest.mark.parametrize("memory_mb, vcpu, memory", [
    (512, "0.25", "512"),
    (3000, "0.5", "3072"),   # the smallest Fargate size that holds it, memory rounded up to its step
    (5000, "1", "5120"),
    (20000, "4", "20480"),
    (40000, "8", "40960"),
    (122880, "16", "122880"),
])
def test_a_cpu_job_container_gets_the_smallest_fargate_size_that_holds_its_memory(
        submitter, batch, batch_job, memory_mb, vcpu, memory) -> None:
    job = batch_job(type="sleep", params={"seconds": 1200}, requirements=Requirements(memory_mb=memory_mb))

    submitter.submit(message_for(job))

    assert resources_of(batch.jobs[0]["request"]) == {"VCPU": vcpu, "MEMORY": memory}


def test_a_cpu_job_without_a_memory_need_keeps_the_job_definitions_size(submitter, batch, batch_job) -> None:
    job = batch_job(type="sleep", params={"seconds": 1200}, requirements=Requirements())
    submitter.submit(message_for(job))
    assert resources_of(batch.jobs[0]["request"]) == {}


def test_a_duplicate_message_starts_no_second_batch_job(submitter, batch, batch_job) -> None:
    job = batch_job()
    first = submitter.submit(message_for(job))

    again = submitter.submit(message_for(job))

    assert again.outcome is SubmitOutcome.DUPLICATE
    assert again.batch_job_id == first.batch_job_id
    assert batch.submits == 1


@pytest.mark.parametrize("setup", ["claimed", "moved_on", "final", "unknown"])
def test_a_message_the_job_is_not_waiting_for_is_dropped_without_submitting(submitter, batch, batch_job, store,
                                                                            setup) -> None:
    job = batch_job()
    job_id = job.job_id
    if setup == "claimed":
        store.claim(job_id, "batch:other", 60, 0)
    elif setup == "moved_on":
        store.claim(job_id, "batch:other", 60, 0)
        store.fail(job_id, 1, JobError(type="X", message="x", retryable=True), 0)  # QUEUED at attempt 1
    elif setup == "final":
        store.cancel(job_id, job.tenant)
    else:
        job_id = "job_does_not_exist"

    result = submitter.submit(JobMessage(job_id=job_id, route=Route.BATCH, attempt=0))

    assert result.outcome is SubmitOutcome.DROPPED
    assert batch.submits == 0


def test_a_redelivery_while_the_first_submitter_may_still_be_calling_batch_comes_back_later(
        submitter, batch, batch_job) -> None:
    job = batch_job()
    batch.fail_submit = (DependencyUnavailable("batch", "read timeout"), False)
    assert submitter.submit(message_for(job), "rh-1").outcome is SubmitOutcome.RESENT

    with pytest.raises(SubmissionInProgress) as raised:
        submitter.submit(message_for(job), "rh-2")

    assert batch.submits == 1
    (handle, seconds), = submitter.queue.visibility
    assert handle == "rh-2" and 0 < seconds <= 121
    assert raised.value.retry_in_s <= 120


def test_after_a_crash_between_submit_and_record_the_batch_job_is_found_by_name_not_started_again(
        submitter, batch, batch_job, clock, raw_item) -> None:
    job = batch_job()
    # Batch accepted the job, but the answer never came back (the submitter timed out or died).
    batch.fail_submit = (DependencyUnavailable("batch", "read timeout"), True)
    assert submitter.submit(message_for(job)).outcome is SubmitOutcome.RESENT
    clock.advance(121)

    result = submitter.submit(message_for(job))

    assert result.outcome is SubmitOutcome.RECOVERED
    assert batch.submits == 1 and len(batch.jobs) == 1
    assert raw_item(job.job_id)["batch_job_id"] == {"S": batch.jobs[0]["jobId"]}


def test_after_a_crash_before_submitjob_the_takeover_submits_exactly_once(submitter, batch, batch_job, clock) -> None:
    job = batch_job()
    batch.fail_submit = (DependencyUnavailable("batch", "connect timeout"), False)
    assert submitter.submit(message_for(job)).outcome is SubmitOutcome.RESENT
    clock.advance(121)

    result = submitter.submit(message_for(job))
    again = submitter.submit(message_for(job))

    assert result.outcome is SubmitOutcome.SUBMITTED
    assert again.outcome is SubmitOutcome.DUPLICATE
    assert len(batch.jobs) == 1 and batch.jobs[0]["jobName"] == f"jb-{job.job_id}-1"


def test_of_two_takeovers_with_the_same_old_token_only_one_wins(store, batch_job, clock) -> None:
    job = batch_job()
    name = batch_job_name(job.job_id, 0)
    store.reserve_batch_submission(job.job_id, 0, name, "dead-submitter")

    store.take_over_batch_reservation(job.job_id, 0, "dead-submitter", "redelivery-a")
    with pytest.raises(InvalidTransition) as lost:
        store.take_over_batch_reservation(job.job_id, 0, "dead-submitter", "redelivery-b")

    assert lost.value.reservation.token == "redelivery-a"


def test_a_retried_job_gets_a_new_batch_job_for_its_new_attempt(submitter, batch, batch_job, store, raw_item) -> None:
    job = batch_job()
    submitter.submit(message_for(job))
    store.claim(job.job_id, batch_owner(batch.jobs[0]["jobId"]), 60, 0)
    store.fail(job.job_id, 1, JobError(type="RetryableError", message="flaky", retryable=True), 0)

    result = submitter.submit(message_for(job, attempt=1))

    assert result.outcome is SubmitOutcome.SUBMITTED
    assert [j["jobName"] for j in batch.jobs] == [f"jb-{job.job_id}-1", f"jb-{job.job_id}-2"]
    assert env_of(batch.jobs[1]["request"])["JOBBRIDGE_EXPECTED_ATTEMPT"] == "1"
    assert raw_item(job.job_id)["batch_job_id"] == {"S": batch.jobs[1]["jobId"]}


def test_a_job_cancelled_while_its_batch_job_was_being_submitted_gets_that_batch_job_terminated(
        submitter, batch, batch_job, store) -> None:
    job = batch_job()
    # the cancel lands between SubmitJob and recording the Batch job id: the stream sees no id to stop
    batch.on_submit = lambda: store.cancel(job.job_id, job.tenant)

    submitter.submit(message_for(job))

    (submitted,) = batch.jobs
    assert store.get(job.job_id).state is State.CANCELLED
    assert batch.terminated == [(submitted["jobId"], f"jobbridge job {job.job_id} cancelled")]


def test_a_cancelled_active_job_with_a_batch_job_is_the_one_record_to_stop() -> None:
    def record(old: str, new: str, batch_job_id: str | None = "b-1", event: str = "MODIFY") -> dict[str, Any]:
        image = {"job_id": {"S": "job_1"}, "state": {"S": new}}
        if batch_job_id:
            image["batch_job_id"] = {"S": batch_job_id}
        return {"eventName": event, "dynamodb": {"NewImage": image, "OldImage": {"state": {"S": old}}}}

    assert batch_job_to_stop(record("QUEUED", "CANCELLED")) == BatchJobToStop("job_1", "b-1")
    assert batch_job_to_stop(record("RUNNING", "CANCELLED")) == BatchJobToStop("job_1", "b-1")
    assert batch_job_to_stop(record("QUEUED", "CANCELLED", batch_job_id=None)) is None
    assert batch_job_to_stop(record("RUNNING", "SUCCEEDED")) is None
    assert batch_job_to_stop(record("CANCELLED", "CANCELLED")) is None
    assert batch_job_to_stop(record("QUEUED", "CANCELLED", event="INSERT")) is None


def test_the_batch_client_errors_are_translated_once() -> None:
    client = aws.client("batch")
    api = BatchApi(client=client)
    with Stubber(client) as stub:
        stub.add_client_error("submit_job", "ClientException", "Job queue nope does not exist", 400)
        stub.add_client_error("submit_job", "ServerException", "try again", 500)
        with pytest.raises(BatchRequestRejected, match="does not exist"):
            api.submit_job(jobName="jb-x-1", jobQueue="nope", jobDefinition="d")
        with pytest.raises(DependencyUnavailable):
            api.submit_job(jobName="jb-x-1", jobQueue="q", jobDefinition="d")


def test_finding_by_name_follows_pages_and_matches_exactly() -> None:
    client = aws.client("batch")
    api = BatchApi(client=client)
    wanted = {"jobQueue": "q", "filters": [{"name": "JOB_NAME", "values": ["jb-job_a-1"]}]}
    with Stubber(client) as stub:
        stub.add_response("list_jobs", {"jobSummaryList": [
            {"jobId": "1", "jobName": "JB-JOB_A-1", "jobArn": "a1"}], "nextToken": "t"}, wanted)
        stub.add_response("list_jobs", {"jobSummaryList": [
            {"jobId": "2", "jobName": "jb-job_a-1", "jobArn": "a2"}]}, {**wanted, "nextToken": "t"})

        found = api.find_jobs_named("q", "jb-job_a-1")

    assert [j["jobId"] for j in found] == ["2"]


# --- the container's claim ----------------------------------------------------------------------


def test_a_rerun_container_of_the_same_batch_job_takes_the_job_over_as_a_new_attempt(store, batch_job) -> None:
    job = batch_job()
    owner = batch_owner("batch-job-1")
    store.claim(job.job_id, owner, 60, 0)  # the first container, on a host that then went away

    taken = store.claim(job.job_id, owner, 60, 0, resume_own_lease=True)

    assert (taken.state, taken.attempt, taken.lease_owner) == (State.RUNNING, 2, owner)
    with pytest.raises(StaleAttempt):  # the lost container's late writes are fenced out
        store.heartbeat(job.job_id, 1, owner, 60)


def test_another_batch_job_cannot_take_over_a_running_job(store, batch_job) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("batch-job-1"), 60, 0)

    with pytest.raises(InvalidTransition):
        store.claim(job.job_id, batch_owner("batch-job-2"), 60, 0, resume_own_lease=True)


def test_a_takeover_is_always_fenced_on_the_expected_attempt(store, batch_job) -> None:
    job = batch_job()
    with pytest.raises(ValueError):
        store.claim(job.job_id, "batch:x", 60, None, resume_own_lease=True)


def test_the_entrypoint_runs_the_job_with_the_same_runner_and_exits_0(store, batch_job) -> None:
    job = batch_job(type="echo", params={"hello": "batch"}, requirements=Requirements())
    settings = ContainerSettings(table_name=store.table_name, job_id=job.job_id, expected_attempt=0)

    result = run(settings, "batch-job-7", store=store)

    assert result.outcome is Outcome.SUCCEEDED
    assert exit_code(result) == EXIT_SETTLED
    final = store.get(job.job_id)
    assert (final.state, final.result, final.lease_owner) == (State.SUCCEEDED, {"hello": "batch"}, "batch:batch-job-7")


def test_the_entrypoint_drops_a_job_another_attempt_owns_and_still_exits_0(store, batch_job) -> None:
    job = batch_job(type="echo", params={}, requirements=Requirements())
    store.claim(job.job_id, "batch:another", 60, 0)
    settings = ContainerSettings(table_name=store.table_name, job_id=job.job_id, expected_attempt=0)

    result = run(settings, "batch-job-7", store=store)

    assert result.outcome is Outcome.DROPPED and exit_code(result) == EXIT_SETTLED
    assert store.get(job.job_id).lease_owner == "batch:another"


def test_the_entrypoint_refuses_a_private_job_and_leaves_it_queued(store, batch_job) -> None:
    # given a restricted private job, and a container environment naming it (a forged SubmitJob)
    job = batch_job(type="genome_align", params={"sample_id": "s-1", "duration_s": 0}, route=Route.PRIVATE,
                    requirements=Requirements())
    settings = ContainerSettings(table_name=store.table_name, job_id=job.job_id, expected_attempt=0)

    # when the container runs
    result = run(settings, "batch-job-7", store=store)

    # then the route fence refused the claim: nothing ran, the job waits for an agent
    assert result.outcome is Outcome.REFUSED and exit_code(result) == EXIT_SETTLED
    current = store.get(job.job_id)
    assert (current.state, current.attempt, current.lease_owner) == (State.QUEUED, 0, None)


def test_a_submitter_fenced_to_batch_refuses_a_private_jobs_message(store, batch, batch_job) -> None:
    # given the submitter as batch_submit's handler wires it (its store fenced to the batch route)
    submitter = BatchSubmitter(store.for_route(Route.BATCH), TARGETS, batch=batch, queue=FakeQueue())
    job = batch_job(type="genome_align", params={"sample_id": "s-1"}, route=Route.PRIVATE)

    # when a message for the private job reaches it
    result = submitter.submit(JobMessage(job_id=job.job_id, route=Route.BATCH, attempt=0))

    # then no Batch job is started and the record carries no reservation
    assert result.outcome is SubmitOutcome.REFUSED
    assert batch.submits == 0
    assert store.get(job.job_id).state is State.QUEUED


def test_the_entrypoint_refuses_an_environment_that_names_no_job() -> None:
    assert main({"AWS_BATCH_JOB_ID": "b-1"}) == EXIT_USAGE
    assert main({"JOBBRIDGE_JOB_ID": "job_x", "JOBBRIDGE_EXPECTED_ATTEMPT": "0"}) == EXIT_USAGE


# --- state change events -------------------------------------------------------------------------


@pytest.fixture
def events(store) -> BatchEvents:
    return BatchEvents(JobLifecycle(store, load_registry(), rng=lambda: 0.5))


def state_change(name: str, job: Job, batch_job_id: str, *, expected_attempt: int = 0, **detail: Any) -> dict:
    event = load_event(name)
    event["detail"]["jobId"] = batch_job_id
    event["detail"]["jobName"] = batch_job_name(job.job_id, expected_attempt)
    for entry in event["detail"]["container"]["environment"]:
        if entry["name"] == "JOBBRIDGE_JOB_ID":
            entry["value"] = job.job_id
        if entry["name"] == "JOBBRIDGE_EXPECTED_ATTEMPT":
            entry["value"] = str(expected_attempt)
    event["detail"].update(detail)
    return event


def host_terminated(event: dict) -> dict:
    event["detail"]["statusReason"] = "Host EC2 (instance i-0a1b2c3d4e5f67890) terminated."
    for holder in (event["detail"]["container"], *[a["container"] for a in event["detail"]["attempts"]]):
        holder.pop("reason", None)
        holder.pop("exitCode", None)
    for attempt in event["detail"]["attempts"]:
        attempt["statusReason"] = "Host EC2 (instance i-0a1b2c3d4e5f67890) terminated."
    return event


def test_a_container_killed_for_memory_fails_the_job_with_batchs_reason_and_no_retry(events, store, batch_job) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-oom"), 60, 0)

    result = events.handle(state_change("batch_state_change_failed", job, "b-oom"))

    assert result.outcome is EventOutcome.FAILED
    final = store.get(job.job_id)
    assert final.state is State.FAILED
    assert final.error.type == "BatchOutOfMemory" and not final.error.retryable
    assert "OutOfMemoryError: Container killed due to memory usage" in final.error.message
    assert "exit code 137" in final.error.message
    assert final.error.attempt == 1


def test_a_reclaimed_host_requeues_the_job_with_backoff_when_attempts_remain(events, store, batch_job,
                                                                           raw_item) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-spot"), 60, 0)

    result = events.handle(host_terminated(state_change("batch_state_change_failed", job, "b-spot")))

    assert result.outcome is EventOutcome.RETRY_SCHEDULED
    requeued = store.get(job.job_id)
    assert (requeued.state, requeued.attempt, requeued.lease_owner) == (State.QUEUED, 1, None)
    assert requeued.error.type == "BatchHostTerminated" and requeued.error.retryable
    assert "Host EC2 (instance i-0a1b2c3d4e5f67890) terminated." in requeued.error.message
    assert requeued.not_before is not None
    assert "dispatched_at" not in raw_item(job.job_id)  # the bridge sends the retry's message


def test_a_duplicate_event_changes_nothing(events, store, batch_job, raw_item) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-spot"), 60, 0)
    event = host_terminated(state_change("batch_state_change_failed", job, "b-spot"))
    events.handle(event)
    before = raw_item(job.job_id)

    again = events.handle(copy.deepcopy(event))

    assert again.outcome is EventOutcome.STALE
    assert raw_item(job.job_id) == before


def test_an_image_that_cannot_be_pulled_counts_the_attempt_the_container_never_claimed(events, store, batch_job,
                                                                                       submitter, batch) -> None:
    job = batch_job()
    submitter.submit(message_for(job))
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"
    event = state_change("batch_state_change_failed", job, batch.jobs[0]["jobId"], statusReason=reason,
                         attempts=[])
    event["detail"]["container"].pop("exitCode")
    event["detail"]["container"].pop("reason")

    result = events.handle(event)
    duplicate = events.handle(copy.deepcopy(event))

    assert result.outcome is EventOutcome.RETRY_SCHEDULED
    requeued = store.get(job.job_id)
    assert (requeued.state, requeued.attempt) == (State.QUEUED, 1)
    assert requeued.error.type == "BatchCannotPullContainer" and reason in requeued.error.message
    assert duplicate.outcome is EventOutcome.STALE
    assert store.get(job.job_id).version == requeued.version


def test_an_unclaimed_last_attempt_fails_the_job(events, store, batch_job, submitter, batch) -> None:
    job = batch_job(max_attempts=1)
    submitter.submit(message_for(job))
    event = state_change("batch_state_change_failed", job, batch.jobs[0]["jobId"],
                         statusReason="CannotPullContainerError: access denied")

    result = events.handle(event)

    assert result.outcome is EventOutcome.FAILED
    final = store.get(job.job_id)
    assert (final.state, final.attempt) == (State.FAILED, 1)


def test_a_job_the_container_settled_is_left_as_it_is(events, store, batch_job) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-ok"), 60, 0)
    store.complete(job.job_id, 1, {"ok": True})
    before = store.get(job.job_id)

    result = events.handle(state_change("batch_state_change_succeeded", job, "b-ok"))

    assert result.outcome is EventOutcome.SETTLED
    assert store.get(job.job_id).version == before.version


def test_a_container_that_exited_0_without_reporting_is_retried(events, store, batch_job) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-quiet"), 60, 0)

    result = events.handle(state_change("batch_state_change_succeeded", job, "b-quiet"))

    assert result.outcome is EventOutcome.RETRY_SCHEDULED
    assert store.get(job.job_id).error.type == "BatchExitedUnsettled"


def test_an_event_of_another_batch_job_does_not_touch_the_running_job(events, store, batch_job) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-current"), 60, 0)
    before = store.get(job.job_id)

    result = events.handle(state_change("batch_state_change_failed", job, "b-older"))

    assert result.outcome is EventOutcome.STALE
    assert store.get(job.job_id).version == before.version


def test_a_taken_over_job_is_still_recognised_as_the_batch_jobs(events, store, batch_job) -> None:
    job = batch_job()
    owner = batch_owner("b-rerun")
    store.claim(job.job_id, owner, 60, 0)
    store.claim(job.job_id, owner, 60, 0, resume_own_lease=True)  # attempt 2 after Batch's own retry

    result = events.handle(state_change("batch_state_change_failed", job, "b-rerun"))

    assert result.outcome is EventOutcome.FAILED  # OOM: not retryable
    assert store.get(job.job_id).error.attempt == 2


@pytest.mark.parametrize("change", [
    {"status": "RUNNING"},
    {"jobName": "nightly-report"},
])
def test_events_that_are_not_a_jobbridge_jobs_end_are_ignored(events, store, batch_job, change) -> None:
    job = batch_job()
    store.claim(job.job_id, batch_owner("b-1"), 60, 0)
    event = state_change("batch_state_change_failed", job, "b-1", **change)
    if "jobName" in change:
        event["detail"]["container"]["environment"] = []

    assert events.handle(event).outcome is EventOutcome.IGNORED
    assert store.get(job.job_id).state is State.RUNNING


@pytest.mark.parametrize("status_reason, reason, expected_type, retryable", [
    ("Essential container in task exited", "OutOfMemoryError: Container killed due to memory usage",
     "BatchOutOfMemory", False),
    ("Host EC2 (instance i-0123456789abcdef0) terminated.", None, "BatchHostTerminated", True),
    ("CannotPullContainerError: Error response from daemon: manifest unknown", None, "BatchCannotPullContainer", True),
    ("Job attempt duration exceeded timeout", None, "Timeout", True),
    ("Essential container in task exited", "CannotStartContainerError: API error (500)", "BatchContainerStartFailed",
     True),
    ("Essential container in task exited", None, "BatchJobFailed", True),
])
def test_batchs_reasons_map_to_errors(status_reason, reason, expected_type, retryable) -> None:
    detail = copy.deepcopy(load_event("batch_state_change_failed")["detail"])
    detail["statusReason"] = status_reason
    detail["attempts"] = []
    detail["container"].pop("reason")
    if reason:
        detail["container"]["reason"] = reason

    error = batch_failure(detail)

    assert (error.type, error.retryable) == (expected_type, retryable)
    assert status_reason in error.message and detail["jobId"] in error.message


def test_the_container_lifecycle_claims_with_takeover(store, batch_job) -> None:
    job = batch_job()
    lifecycle = BatchContainerLifecycle(store, load_registry())
    lifecycle.claim(job.job_id, "batch:b-1", 60, 0)

    again = lifecycle.claim(job.job_id, "batch:b-1", 60, 0)

    assert again.attempt == 2


def test_sealing_removes_every_credential_variable_and_nothing_else() -> None:
    from jobbridge import sandbox

    env = {name: "x" for name in sandbox.CREDENTIAL_VARIABLES}
    env.update({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "PATH": "/bin",
                "JOBBRIDGE_JOB_ID": "job_1"})

    removed = sandbox.seal_credentials(env)

    assert sorted(removed) == sorted(sandbox.CREDENTIAL_VARIABLES)
    assert env == {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "PATH": "/bin",
                   "JOBBRIDGE_JOB_ID": "job_1"}


def test_forbid_inspection_makes_the_process_non_dumpable() -> None:
    # In a process of its own: the test runner must stay dumpable.
    probe = ("import ctypes, ctypes.util; from jobbridge import sandbox; assert sandbox.forbid_inspection(); "
             "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True); print(libc.prctl(3, 0, 0, 0, 0))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # PR_GET_DUMPABLE: 0, /proc/<pid>/* readable by root only


def test_an_outage_while_submitting_sends_a_fresh_copy_later_and_spends_no_receive(submitter, batch, batch_job,
                                                                                  store) -> None:
    # given Batch unavailable for this SubmitJob (throttled, 5xx, a read timeout with nothing submitted)
    job = batch_job()
    batch.fail_submit = (DependencyUnavailable("batch", "submit_job: ThrottlingException"), False)
    # when the message is handled
    result = submitter.submit(message_for(job), "rh-1")
    # then the record is acknowledged and a fresh copy of the message comes back after a short,
    # growing delay (a receive of the old one would count towards the DLQ: this one starts at 0)
    assert result.outcome is SubmitOutcome.RESENT
    ((body, delay),) = submitter.queue.sent
    again = JobMessage.model_validate_json(body)
    assert (again.job_id, again.attempt, again.returns) == (job.job_id, 0, 1) and 1 <= delay <= 2


# --- a re-sent message asks Batch what became of its job (the state-change event may be lost) ---------


def test_a_waiting_jobs_message_finds_its_batch_job_still_runnable_and_changes_nothing(submitter, batch, batch_job,
                                                                                      store) -> None:
    job = batch_job()
    submitter.submit(message_for(job))
    result = submitter.submit(message_for(job))  # the sweeper sent the waiting job's message again
    assert result.outcome is SubmitOutcome.DUPLICATE and batch.submits == 1
    assert store.get(job.job_id).state is State.QUEUED and store.get(job.job_id).attempt == 0


def test_a_batch_job_that_failed_before_its_container_claimed_is_retried_though_its_event_was_lost(
        submitter, batch, batch_job, store) -> None:
    job = batch_job()
    submitter.submit(message_for(job))
    batch.jobs[0].update(status="FAILED", statusReason="CannotPullContainerError: pull access denied")
    # when the sweeper re-sends the waiting job's message (its state-change event went to the DLQ)
    result = submitter.submit(message_for(job))
    # then Batch is asked, and the attempt is counted and retried as the event would have had it
    again = store.get(job.job_id)
    assert result.outcome is SubmitOutcome.RECONCILED
    assert (again.state, again.attempt) == (State.QUEUED, 1)
    assert again.error is not None and again.error.type == "BatchCannotPullContainer"


def test_a_batch_job_batch_no_longer_knows_is_retried_as_batch_job_lost(submitter, batch, batch_job, store) -> None:
    job = batch_job()
    submitter.submit(message_for(job))
    batch.jobs[0]["forgotten"] = True
    result = submitter.submit(message_for(job))
    again = store.get(job.job_id)
    assert result.outcome is SubmitOutcome.RECONCILED
    assert (again.state, again.attempt, again.error.type) == (State.QUEUED, 1, "BatchJobLost")
