"""The AWS Batch route: one Batch job per jobbridge attempt, and what to do when a container ends
without reporting. The only code that calls the Batch API (through ``jobbridge.aws.client``).

``BatchSubmitter`` (the public-batch queue's consumer, functions/batch_submit) submits ONE Batch
job per attempt, however often the message arrives. SubmitJob has no idempotency token, so:

    message (job, attempt a)
      └─ reserve attempt a on the job record (conditional: QUEUED, attempt a, no submission for a)
           ├─ reserved ──> SubmitJob "jb-{job}-{a+1}" ──> record the Batch job id (conditional)
           ├─ already reserved, id recorded ──> duplicate: nothing to do
           ├─ already reserved, no id, recent ──> a submitter may be mid-call: try again later
           ├─ already reserved, no id, old ──> take the reservation over, then ListJobs by the
           │     deterministic name: found ──> record its id; not found ──> SubmitJob
           └─ not QUEUED at a (claimed, final, moved on) ──> stale duplicate: drop

The container (``jobbridge.batch_entrypoint``) runs the same Runner as the Lambda worker, owner
``batch:<AWS_BATCH_JOB_ID>``, and settles the job itself. ``BatchEvents`` (functions/batch_events,
EventBridge "Batch Job State Change", status SUCCEEDED or FAILED) only acts when the container
left the job unsettled:

    job RUNNING, lease_owner batch:<this Batch job>  ──> fail the attempt (retry or FAILED) with Batch's reason
    job QUEUED at attempt a, reserved as this job   ──> the container never claimed: the attempt counts
    anything else (final, another attempt)          ──> nothing to do (idempotent)

A cancelled job stops on Batch too, driven by the table's stream, not by the API's write path:
the bridge sees the CANCELLED image of a job that has a ``batch_job_id`` (``batch_job_to_stop``)
and calls TerminateJob (a job not yet STARTING is cancelled, a running container is stopped). A
submission whose id could not be recorded because the job was cancelled meanwhile is terminated
by its submitter.

Batch reports why a job failed only as text (``statusReason``, ``container.reason``) and an exit
code; its own retry strategy (EvaluateOnExit) matches those texts by glob, and the texts used here
are the ones AWS documents: https://docs.aws.amazon.com/batch/latest/userguide/job_retries.html ,
https://docs.aws.amazon.com/batch/latest/userguide/troubleshooting.html
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .config import Settings
from .errors import (
    DependencyUnavailable,
    InvalidTransition,
    JobAlreadyFinal,
    JobBridgeError,
    JobNotFound,
    RouteMismatch,
    StaleAttempt,
)
from .ids import parse_iso
from .lifecycle import JobLifecycle
from .registry import Registry
from .messages import JobMessage
from .models import Job, JobError, Requirements, State
from .queues import Queue
from .store import BatchReservation, BatchSubmissionReserved, JobStore

log = logging.getLogger(__name__)

JOB_NAME_PREFIX = "jb-"
OWNER_PREFIX = "batch:"
# Batch's attempt timeout is a backstop behind the runner's own (the job type's timeout): room to
# start the container, and for the runner to fail a timed-out attempt itself and settle.
TIMEOUT_MARGIN_S = 120
MIN_ATTEMPT_DURATION_S = 60  # Batch's minimum attemptDurationSeconds
# A reservation without a Batch job id is taken over only when no submitter can still be running:
# BatchSubmitFunction's Timeout (template.yaml) is 60 s.
TAKEOVER_AFTER_S = 120.0

_BATCH_UNAVAILABLE = {"ServerException", "TooManyRequestsException", "ThrottlingException",
                      "ServiceUnavailableException", "InternalServerError"}


class BatchSettings(Settings):
    """Settings of BatchSubmitFunction: the shared ones plus where Batch jobs go (template.yaml)."""

    batch_job_queue_cpu: str = ""
    batch_job_queue_gpu: str = ""
    batch_job_definition_cpu: str = ""
    batch_job_definition_gpu: str = ""


class ContainerSettings(Settings):
    """Settings of the Batch container: the shared ones plus the job it runs (SubmitJob overrides)."""

    job_id: str
    expected_attempt: int
    correlation_id: str | None = None


@dataclass(frozen=True)
class BatchTarget:
    job_queue: str
    job_definition: str


@dataclass(frozen=True)
class BatchTargets:
    """Where a job goes: the GPU queue and definition when it needs a GPU, else the CPU ones."""

    cpu: BatchTarget
    gpu: BatchTarget

    @classmethod
    def from_settings(cls, settings: BatchSettings) -> "BatchTargets":
        missing = [name for name in ("batch_job_queue_cpu", "batch_job_queue_gpu", "batch_job_definition_cpu",
                                     "batch_job_definition_gpu") if not getattr(settings, name)]
        if missing:
            raise RuntimeError("Batch is not configured: set " + ", ".join("JOBBRIDGE_" + m.upper() for m in missing))
        return cls(BatchTarget(settings.batch_job_queue_cpu, settings.batch_job_definition_cpu),
                   BatchTarget(settings.batch_job_queue_gpu, settings.batch_job_definition_gpu))

    def for_job(self, job: Job) -> BatchTarget:
        return self.gpu if job.requirements.gpu else self.cpu


# Fargate's task sizes: vCPU -> the memory (MiB) it allows, from its smallest to its largest, by a step.
# https://docs.aws.amazon.com/batch/latest/APIReference/API_ResourceRequirement.html
FARGATE_SIZES: tuple[tuple[str, int, int, int], ...] = (
    ("0.25", 512, 2048, 512),  # 512, 1024 or 2048 only
    ("0.5", 1024, 4096, 1024),
    ("1", 2048, 8192, 1024),
    ("2", 4096, 16384, 1024),
    ("4", 8192, 30720, 1024),
    ("8", 16384, 61440, 4096),
    ("16", 32768, 122880, 8192),
)


def fargate_size(memory_mb: int) -> tuple[str, int]:
    """The smallest Fargate size (vCPU, MiB) with at least ``memory_mb``. ValueError past the largest
    (routing refuses such CPU work at submit)."""
    for vcpu, low, high, step in FARGATE_SIZES:
        if memory_mb <= high:
            if vcpu == "0.25":
                return vcpu, next(m for m in (512, 1024, 2048) if m >= memory_mb)
            return vcpu, max(low, -(-memory_mb // step) * step)
    raise ValueError(f"{memory_mb} MiB is past Fargate's largest size")


def container_resources(requirements: Requirements) -> list[dict[str, str]]:
    """SubmitJob's containerOverrides.resourceRequirements for a job's needs: a GPU job (EC2) gets
    its GPU and the memory it asked for; a CPU job (Fargate) the smallest Fargate size holding its
    memory (Fargate accepts only those pairs). Without a memory need, the job definition's size."""
    if requirements.gpu:
        resources = [{"type": "GPU", "value": "1"}]
        if requirements.memory_mb is not None:
            resources.append({"type": "MEMORY", "value": str(requirements.memory_mb)})
        return resources
    if requirements.memory_mb is None:
        return []
    vcpu, memory = fargate_size(requirements.memory_mb)
    return [{"type": "VCPU", "value": vcpu}, {"type": "MEMORY", "value": str(memory)}]


def batch_job_name(job_id: str, message_attempt: int) -> str:
    """The Batch job that runs attempt ``message_attempt + 1``: deterministic, so a redelivery can
    find it by name (ListJobs JOB_NAME filter)."""
    return f"{JOB_NAME_PREFIX}{job_id}-{message_attempt + 1}"


def parse_batch_job_name(name: str) -> tuple[str, int] | None:
    """``jb-{job_id}-{n}`` -> (job_id, message attempt n - 1); None for a name that is not ours."""
    match = re.fullmatch(rf"{JOB_NAME_PREFIX}(?P<job_id>.+)-(?P<n>[1-9][0-9]*)", name or "")
    if not match:
        return None
    return match["job_id"], int(match["n"]) - 1


def batch_owner(batch_job_id: str) -> str:
    """The lease owner of the container(s) of one Batch job (the same across Batch's own retries)."""
    return f"{OWNER_PREFIX}{batch_job_id}"


class BatchRequestRejected(JobBridgeError):
    """Batch refused the request (ClientException: a missing queue or definition, a bad parameter)."""


class SubmissionInProgress(JobBridgeError):
    """Another delivery of this message reserved the attempt moments ago and may still be calling
    SubmitJob: the message must come back later, when a takeover is safe."""

    def __init__(self, job_id: str, retry_in_s: float) -> None:
        super().__init__(f"the Batch submission of job {job_id} is in progress elsewhere; retry in {retry_in_s:.0f}s")
        self.job_id = job_id
        self.retry_in_s = retry_in_s


class BatchApi:
    """The Batch calls jobbridge makes, with errors translated once."""

    def __init__(self, *, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("batch")
        return self._client

    def submit_job(self, **request: Any) -> dict[str, Any]:
        return self._call("submit_job", **request)

    def terminate_job(self, batch_job_id: str, reason: str) -> None:
        """Stop a Batch job: cancelled if not yet STARTING, its container stopped if STARTING or
        RUNNING (either way FAILED with ``reason``); a job already ended is left as it is.
        https://docs.aws.amazon.com/batch/latest/APIReference/API_TerminateJob.html"""
        self._call("terminate_job", jobId=batch_job_id, reason=reason[:1024])

    def describe_job(self, batch_job_id: str) -> dict[str, Any] | None:
        """DescribeJobs for one job, or None when Batch does not (or no longer) know it."""
        jobs = self._call("describe_jobs", jobs=[batch_job_id]).get("jobs") or []
        return jobs[0] if jobs else None

    def find_jobs_named(self, job_queue: str, name: str) -> list[dict[str, Any]]:
        """Jobs of any status in ``job_queue`` named exactly ``name`` (with a filter, ListJobs
        ignores jobStatus and returns every status: API_ListJobs)."""
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {"jobQueue": job_queue, "filters": [{"name": "JOB_NAME", "values": [name]}]}
        while True:
            out = self._call("list_jobs", **request)
            # The filter matches case-insensitively and a trailing * is a prefix match: compare exactly.
            found.extend(j for j in out.get("jobSummaryList", []) if j.get("jobName") == name)
            if not out.get("nextToken"):
                return found
            request["nextToken"] = out["nextToken"]

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in _BATCH_UNAVAILABLE or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                raise DependencyUnavailable("batch", f"{operation}: {code}") from exc
            raise BatchRequestRejected(f"batch {operation} refused ({code}): {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable("batch", f"{operation}: {type(exc).__name__}") from exc


# --- submitting --------------------------------------------------------------------------------


class SubmitOutcome(str, Enum):
    SUBMITTED = "submitted"  # a new Batch job started for this attempt
    RECOVERED = "recovered"  # a crashed submitter's Batch job was found by name and recorded
    DUPLICATE = "duplicate"  # this attempt already has its Batch job
    DROPPED = "dropped"  # the job is not waiting for this attempt (claimed, final, moved on, unknown)
    REFUSED = "refused"  # the job is not a batch job (the route fence): no Batch job may run it
    RESENT = "resent"  # DynamoDB or Batch was unavailable: a fresh copy of the message comes back later
    RECONCILED = "reconciled"  # the attempt's Batch job ended unclaimed (its event lost): retried or FAILED


@dataclass(frozen=True)
class SubmitResult:
    outcome: SubmitOutcome
    job_id: str
    batch_job_id: str | None = None
    batch_job_name: str | None = None
    detail: str = ""


class BatchSubmitter:
    """One Batch job per attempt (the module docstring has the protocol)."""

    def __init__(self, store: JobStore, targets: BatchTargets, *, batch: BatchApi | None = None,
                 queue: Queue | None = None, takeover_after_s: float = TAKEOVER_AFTER_S,
                 new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
                 clock: Callable[[], datetime] | None = None, events: "BatchEvents | None" = None,
                 registry: Registry | None = None) -> None:
        self.store = store
        self.clock = clock or store.clock  # the clock that wrote batch_reserved_at
        self.targets = targets
        self.batch = batch or BatchApi()
        self.queue = queue
        self.takeover_after_s = takeover_after_s
        self.new_token = new_token
        # Settles a Batch job found ended unclaimed (its retry policy: the job type's if registered).
        self.events = events or BatchEvents(JobLifecycle(store, registry or Registry()))

    def submit(self, message: JobMessage, receipt_handle: str | None = None) -> SubmitResult:
        """Start this attempt's Batch job, once. Through an outage (DynamoDB or Batch unavailable, a
        read timeout) the message comes back as a fresh copy after a short backoff: the reservation
        protocol finds where the first try got to (a reservation without an id is taken over, and
        a Batch job it did start is found by name)."""
        try:
            return self._submit_once(message, receipt_handle)
        except DependencyUnavailable as exc:
            if self.queue is None:
                raise
            delay = self.queue.send_again(message)  # SQS out too: raises, and the record itself returns
            log.warning("could not submit through an outage; the message comes back later",
                        extra={"job_id": message.job_id, "error": str(exc), "retry_in_s": delay})
            return SubmitResult(SubmitOutcome.RESENT, message.job_id, detail=str(exc))

    def _submit_once(self, message: JobMessage, receipt_handle: str | None) -> SubmitResult:
        name = batch_job_name(message.job_id, message.attempt)
        token = self.new_token()
        try:
            reservation = self.store.reserve_batch_submission(message.job_id, message.attempt, name, token)
        except BatchSubmissionReserved as exc:
            return self._already_reserved(message, exc.reservation, token, receipt_handle)
        except RouteMismatch as exc:
            log.warning("reservation refused by the route fence; message dropped",
                        extra={"job_id": message.job_id, "reason": str(exc), "job_route": exc.job_route})
            return SubmitResult(SubmitOutcome.REFUSED, message.job_id, batch_job_name=name, detail=str(exc))
        except (JobNotFound, StaleAttempt, JobAlreadyFinal, InvalidTransition) as exc:
            log.info("not waiting for this attempt; message dropped", extra={"job_id": message.job_id, "reason": str(exc)})
            return SubmitResult(SubmitOutcome.DROPPED, message.job_id, batch_job_name=name, detail=str(exc))
        return self._submit(message, reservation, token, SubmitOutcome.SUBMITTED)

    def _already_reserved(self, message: JobMessage, reservation: BatchReservation, token: str,
                          receipt_handle: str | None) -> SubmitResult:
        if reservation.batch_job_id:
            return self._ask_batch(message, reservation)
        age = (self.clock() - parse_iso(reservation.reserved_at)).total_seconds() if reservation.reserved_at else float("inf")
        if age < self.takeover_after_s:
            wait = self.takeover_after_s - age
            if self.queue is not None and receipt_handle:
                # Come back when a takeover is safe, not after the queue's whole visibility timeout.
                self.queue.change_visibility(receipt_handle, int(wait) + 1)
            raise SubmissionInProgress(message.job_id, wait)
        try:
            taken = self.store.take_over_batch_reservation(message.job_id, message.attempt, reservation.token, token)
        except BatchSubmissionReserved as exc:  # someone else took over, or recorded the id, first
            if exc.reservation.batch_job_id:
                return SubmitResult(SubmitOutcome.DUPLICATE, message.job_id, exc.reservation.batch_job_id,
                                    exc.reservation.job_name)
            raise SubmissionInProgress(message.job_id, self.takeover_after_s) from None
        except (JobNotFound, StaleAttempt, JobAlreadyFinal, InvalidTransition) as exc:
            return SubmitResult(SubmitOutcome.DROPPED, message.job_id, batch_job_name=reservation.job_name, detail=str(exc))
        # The previous submitter died between reserving and recording: it may or may not have
        # reached SubmitJob. The deterministic name tells.
        target = self.targets.for_job(taken.job)
        existing = sorted(self.batch.find_jobs_named(target.job_queue, taken.job_name), key=lambda j: j.get("createdAt", 0))
        if existing:
            batch_job_id = existing[0]["jobId"]
            self._record(message.job_id, message.attempt, token, batch_job_id)
            log.warning("recovered the Batch job of a submitter that died before recording it",
                        extra={"job_id": message.job_id, "batch_job_id": batch_job_id})
            return SubmitResult(SubmitOutcome.RECOVERED, message.job_id, batch_job_id, taken.job_name)
        return self._submit(message, taken, token, SubmitOutcome.SUBMITTED)

    def _ask_batch(self, message: JobMessage, reservation: BatchReservation) -> SubmitResult:
        """This attempt's Batch job exists and its job still waits for it: a duplicate message, or
        the sweeper re-sending a job that waited long (BATCH_CHECK_AFTER_S). Ask Batch what became
        of it: a Batch job that ended (or that Batch no longer knows) while the job is still QUEUED
        at this attempt never had its container claim it, and its state-change event was lost
        (BatchEventsDLQ): settle it as BatchEventsFunction would have. A job still RUNNABLE or
        STARTING is left to run (and to the queue's jobStateTimeLimitActions, then the job's
        queue-wait deadline)."""
        batch_job_id = reservation.batch_job_id or ""
        duplicate = SubmitResult(SubmitOutcome.DUPLICATE, message.job_id, batch_job_id, reservation.job_name)
        detail = self.batch.describe_job(batch_job_id)
        if detail is None:
            detail = {"jobId": batch_job_id, "jobName": reservation.job_name, "status": "FAILED",
                      "statusReason": "BatchJobLost: Batch no longer knows this job (it ended long ago, unclaimed)"}
        if detail.get("status") not in ("SUCCEEDED", "FAILED"):
            log.info("duplicate message: this attempt's Batch job exists",
                     extra={"job_id": message.job_id, "batch_job_id": batch_job_id, "status": detail.get("status")})
            return duplicate
        settled = self.events.handle({"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": detail})
        if settled.outcome not in (EventOutcome.RETRY_SCHEDULED, EventOutcome.FAILED):
            return duplicate
        log.warning("the attempt's Batch job ended unclaimed and its event was lost; settled it",
                    extra={"job_id": message.job_id, "batch_job_id": batch_job_id, "outcome": settled.outcome.value})
        return SubmitResult(SubmitOutcome.RECONCILED, message.job_id, batch_job_id, reservation.job_name, settled.detail)

    def _submit(self, message: JobMessage, reservation: BatchReservation, token: str,
                outcome: SubmitOutcome) -> SubmitResult:
        job = reservation.job
        target = self.targets.for_job(job)
        environment = [
            {"name": "JOBBRIDGE_JOB_ID", "value": job.job_id},
            {"name": "JOBBRIDGE_EXPECTED_ATTEMPT", "value": str(message.attempt)},
        ]
        correlation_id = job.correlation_id or message.correlation_id
        if correlation_id:
            environment.append({"name": "JOBBRIDGE_CORRELATION_ID", "value": correlation_id})
        overrides: dict[str, Any] = {"environment": environment}
        resources = container_resources(job.requirements)
        if resources:
            overrides["resourceRequirements"] = resources
        out = self.batch.submit_job(
            jobName=reservation.job_name,
            jobQueue=target.job_queue,
            jobDefinition=target.job_definition,
            containerOverrides=overrides,
            timeout={"attemptDurationSeconds": max(MIN_ATTEMPT_DURATION_S, int(job.timeout_s) + TIMEOUT_MARGIN_S)},
        )
        batch_job_id = out["jobId"]
        self._record(job.job_id, message.attempt, token, batch_job_id)
        log.info("Batch job submitted", extra={"job_id": job.job_id, "batch_job_id": batch_job_id,
                                               "batch_job_name": reservation.job_name, "job_queue": target.job_queue})
        return SubmitResult(outcome, job.job_id, batch_job_id, reservation.job_name)

    def _record(self, job_id: str, attempt: int, token: str, batch_job_id: str) -> None:
        """Record the Batch job on the reservation. A job cancelled between the reservation and
        now never gets its id recorded (so the stream cannot stop it): its submitter stops it."""
        try:
            recorded = self.store.record_batch_job(job_id, attempt, token, batch_job_id)
        except JobAlreadyFinal:
            log.warning("the job ended before its Batch job was recorded; terminating it",
                        extra={"job_id": job_id, "batch_job_id": batch_job_id})
            self.batch.terminate_job(batch_job_id, stop_reason(job_id))
            return
        if not recorded:  # taken over: its new holder finds this Batch job by name
            log.warning("submitted, but the reservation moved on before the id was recorded",
                        extra={"job_id": job_id, "batch_job_id": batch_job_id})


# --- cancel: stopping the Batch job of a cancelled job ----------------------------------------------


@dataclass(frozen=True)
class BatchJobToStop:
    job_id: str
    batch_job_id: str


def batch_job_to_stop(record: dict[str, Any]) -> BatchJobToStop | None:
    """The Batch job to terminate for a stream record: an active job (QUEUED or RUNNING) that
    became CANCELLED and has a Batch job. None for any other record."""
    images = record.get("dynamodb") or {}
    new, old = images.get("NewImage") or {}, images.get("OldImage") or {}
    state = (new.get("state") or {}).get("S")
    was = (old.get("state") or {}).get("S")
    batch_job_id = (new.get("batch_job_id") or {}).get("S")
    if record.get("eventName") != "MODIFY" or state != State.CANCELLED.value or not batch_job_id:
        return None
    if was not in (State.QUEUED.value, State.RUNNING.value):
        return None
    return BatchJobToStop(job_id=new["job_id"]["S"], batch_job_id=batch_job_id)


def stop_reason(job_id: str) -> str:
    return f"jobbridge job {job_id} cancelled"


# --- the container's lifecycle ---------------------------------------------------------------


class BatchContainerLifecycle(JobLifecycle):
    """JobLifecycle whose claim may take over the job from an earlier container of the SAME Batch
    job (Batch's retry strategy re-runs it after a host failure): see JobStore.claim."""

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              claim_token: str | None = None) -> Job:
        if expected_attempt is None:
            return self.store.claim(job_id, owner, lease_s, claim_token=claim_token)
        return self.store.claim(job_id, owner, lease_s, expected_attempt, resume_own_lease=True,
                                claim_token=claim_token)


# --- state change events -------------------------------------------------------------------------


class EventOutcome(str, Enum):
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    SETTLED = "settled"  # the container settled the job itself (the usual case)
    STALE = "stale"  # the job moved on to another attempt or owner
    IGNORED = "ignored"  # not a final status, not our job, or an unknown job


@dataclass(frozen=True)
class BatchJobRef:
    """Which jobbridge job and attempt a Batch job was for."""

    batch_job_id: str
    batch_job_name: str
    job_id: str
    expected_attempt: int  # the message's attempt (the container claims attempt + 1)

    @classmethod
    def of(cls, detail: dict[str, Any]) -> "BatchJobRef | None":
        parsed = parse_batch_job_name(detail.get("jobName", ""))
        env = {e.get("name"): e.get("value") for e in (detail.get("container") or {}).get("environment") or []}
        if parsed is None:
            if not env.get("JOBBRIDGE_JOB_ID") or not str(env.get("JOBBRIDGE_EXPECTED_ATTEMPT", "")).isdigit():
                return None
            parsed = env["JOBBRIDGE_JOB_ID"], int(env["JOBBRIDGE_EXPECTED_ATTEMPT"])
        if not detail.get("jobId"):
            return None
        return cls(detail["jobId"], detail.get("jobName", ""), parsed[0], parsed[1])


def batch_failure(detail: dict[str, Any]) -> JobError:
    """Batch's account of why its job ended, as the JobError recorded on the jobbridge job."""
    status = detail.get("status", "")
    attempts = detail.get("attempts") or []
    last = attempts[-1] if attempts else {}
    container = {**(detail.get("container") or {}), **(last.get("container") or {})}
    status_reason = detail.get("statusReason") or last.get("statusReason") or ""
    reason = container.get("reason") or ""
    exit_code = container.get("exitCode")
    parts = [f"Batch job {detail.get('jobId')} ({detail.get('jobName')}) {status}"]
    if status_reason:
        parts.append(f"status reason: {status_reason}")
    if reason:
        parts.append(f"container: {reason}")
    if exit_code is not None:
        parts.append(f"exit code {exit_code}")
    if len(attempts) > 1:
        parts.append(f"after {len(attempts)} Batch attempts")
    message = "; ".join(parts)[:2000]
    texts = (status_reason, reason)

    def starts(*prefixes: str) -> bool:
        return any(text.startswith(prefix) for text in texts for prefix in prefixes)

    if status == "SUCCEEDED":
        # Exit 0 without settling: not something the job asked for; retry it.
        return JobError(type="BatchExitedUnsettled", message=message + ": the container exited without reporting",
                        retryable=True)
    if starts("OutOfMemoryError"):
        # The same definition would run out of memory again: retrying only burns GPU hours.
        return JobError(type="BatchOutOfMemory", message=message, retryable=False)
    if starts("Host EC2"):  # e.g. "Host EC2 (instance i-0123...) terminated." (Spot reclaim, host failure)
        return JobError(type="BatchHostTerminated", message=message, retryable=True)
    if starts("CannotPullContainerError"):
        return JobError(type="BatchCannotPullContainer", message=message, retryable=True)
    if starts("CannotStartContainerError", "CannotCreateContainerError", "CannotInspectContainerError",
              "ResourceInitializationError", "Task failed to start"):
        return JobError(type="BatchContainerStartFailed", message=message, retryable=True)
    if starts("BatchJobLost"):
        return JobError(type="BatchJobLost", message=message, retryable=True)
    if starts("Job attempt duration exceeded timeout"):
        return JobError(type="Timeout", message=message, retryable=True)
    return JobError(type="BatchJobFailed", message=message, retryable=True)


@dataclass(frozen=True)
class EventResult:
    outcome: EventOutcome
    job_id: str | None = None
    detail: str = ""


class BatchEvents:
    """Settles jobs whose Batch container ended without reporting (the module docstring)."""

    def __init__(self, lifecycle: JobLifecycle) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store

    def handle(self, event: dict[str, Any]) -> EventResult:
        if event.get("source") != "aws.batch" or event.get("detail-type") != "Batch Job State Change":
            return EventResult(EventOutcome.IGNORED, detail="not a Batch job state change")
        detail = event.get("detail") or {}
        if detail.get("status") not in ("SUCCEEDED", "FAILED"):
            return EventResult(EventOutcome.IGNORED, detail=f"status {detail.get('status')}")
        ref = BatchJobRef.of(detail)
        if ref is None:
            return EventResult(EventOutcome.IGNORED, detail=f"Batch job {detail.get('jobName')!r} is not a jobbridge job")
        try:
            job = self.store.get(ref.job_id)
        except JobNotFound:
            log.warning("Batch job for an unknown job", extra={"job_id": ref.job_id, "batch_job_id": ref.batch_job_id})
            return EventResult(EventOutcome.IGNORED, ref.job_id, "unknown job")
        if job.state.is_final:
            return EventResult(EventOutcome.SETTLED, job.job_id, f"already {job.state.value}")
        error = batch_failure(detail)
        try:
            if (job.state is State.RUNNING and job.lease_owner == batch_owner(ref.batch_job_id)
                    and job.attempt > ref.expected_attempt):
                # The container claimed the job and died (or exited) before settling it.
                final = self.lifecycle.fail(job.job_id, job.attempt, error, job.max_attempts, job.type)
            elif job.state is State.QUEUED and job.attempt == ref.expected_attempt:
                # The container never claimed it: the image did not pull, or it died at start.
                attempt = job.attempt + 1
                delay = self.lifecycle.backoff_s(job.type, attempt) if error.retryable and attempt < job.max_attempts else None
                final = self.store.fail_unstarted_batch_attempt(job.job_id, job.attempt, ref.batch_job_name, error, delay)
            else:
                return EventResult(EventOutcome.STALE, job.job_id,
                                   f"job is {job.state.value} at attempt {job.attempt} (owner {job.lease_owner})")
        except (StaleAttempt, JobAlreadyFinal, InvalidTransition) as exc:
            # Moved on between the read and the write (a heartbeat cannot: the container is gone).
            return EventResult(EventOutcome.STALE, job.job_id, str(exc))
        outcome = EventOutcome.RETRY_SCHEDULED if final.state is State.QUEUED else EventOutcome.FAILED
        log.warning("Batch job ended without settling its job", extra={
            "job_id": job.job_id, "batch_job_id": ref.batch_job_id, "outcome": outcome.value,
            "error_type": error.type, "error": error.message})
        return EventResult(outcome, job.job_id, error.message)
