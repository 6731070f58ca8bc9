"""The runner: claim, run the job type's function, heartbeat, report progress, honour cancel
and timeouts, and settle the job exactly once. The Lambda worker, the Batch container and the
on-prem agent all use it; they differ only in the ``lifecycle`` they pass (the store directly,
or the API's /agent routes) and in how much time they have.

Every write after the claim is fenced on (RUNNING, attempt): once another worker has taken the
job over (our lease expired) our writes fail with StaleAttempt, and we abandon the job without
reporting.

    claim ──ok──> run ──returns──> complete
      │            ├──JobFailure / Exception──> fail (retry with backoff, or FAILED)
      │            ├──JobCancelled (cancel requested)──> acknowledge_cancel
      │            ├──ignores the cancel request past cancel_grace_s──> acknowledge_cancel (forced), left behind
      │            ├──JobTimeout──> fail (retryable timeout)
      │            ├──WorkerShutdown (the agent stops)──> release (QUEUED again, no run spent)
      │            └──LeaseLost──> abandon (another worker owns the job)
      └──refused (duplicate, cancelled, final)──> drop the message
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol

from .errors import (
    DependencyUnavailable,
    InvalidTransition,
    ItemTooLarge,
    JobBridgeError,
    JobCancelled,
    JobFailure,
    JobNotFound,
    RouteMismatch,
    StaleAttempt,
    UnknownJobType,
    WorkerShutdown,
)
from .models import Job, JobError, Progress
from .registry import JobType, Registry

log = logging.getLogger(__name__)


class _JobLogger(logging.LoggerAdapter):
    """Adds the job's keys to every line and keeps the line's own ``extra`` too (before Python
    3.13 a LoggerAdapter replaced it: "attempt settled" lost its outcome)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class JobTimeout(Exception):
    """The attempt ran past its time; raised at the function's next checkpoint."""


class LeaseLost(Exception):
    """Another worker owns the job now; stop without reporting."""


class Lifecycle(Protocol):
    """What the runner needs: lifecycle.JobLifecycle, or the agent's client of the /agent routes."""

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              claim_token: str | None = None) -> Job: ...
    def heartbeat(self, job_id: str, attempt: int, owner: str, lease_s: float, progress: Progress | None = None) -> Job: ...
    def complete(self, job_id: str, attempt: int, result: Any) -> Job: ...
    def fail(self, job_id: str, attempt: int, error: JobError, max_attempts: int | None = None, job_type: str | None = None) -> Job: ...
    def acknowledge_cancel(self, job_id: str, attempt: int, *, forced: bool = False) -> Job: ...
    def release(self, job_id: str, attempt: int, reason: str) -> Job: ...


Execute = Callable[[JobType, Any, "RunContext"], Any]
"""How the job type's function is run: ``execute(job_type, params, ctx) -> result``. It raises
what the function raises (JobFailure, JobCancelled, JobTimeout, LeaseLost, ...)."""


def execute_inline(job_type: JobType, params: Any, ctx: "RunContext") -> Any:
    """Run the function in the calling thread (the Lambda worker, the Batch container). The
    agent passes its own ``execute`` that runs it in a child process it can kill."""
    return job_type.func(params, ctx)


class Outcome(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    CANCELLED = "cancelled"
    DROPPED = "dropped"  # the claim was refused: duplicate delivery, cancelled or final
    REFUSED = "refused"  # the job is of a route this worker does not serve (the route fence)
    ABANDONED = "abandoned"  # the lease was lost to another worker
    UNSETTLED = "unsettled"  # the final write could not be made; the message must come back
    RELEASED = "released"  # the worker shut down: the job was handed back without spending a run
    HANDED_BACK = "handed_back"  # not started; a fresh copy of the message was sent for another worker

    @property
    def acknowledges(self) -> bool:
        """Whether the message that carried the job may be deleted."""
        return self is not Outcome.UNSETTLED


@dataclass(frozen=True)
class RunnerConfig:
    owner: str
    lease_s: float = 60.0
    heartbeat_s: float = 15.0  # well inside the lease: two beats may fail before it lapses
    progress_flush_s: float = 2.0  # progress is coalesced: at most one write per interval
    timeout_grace_s: float = 5.0  # a function that ignores its timeout is failed for it after this
    cancel_grace_s: float = 10.0  # a function that ignores a cancel request is cancelled for it after this
    settle_retries: int = 4  # the final write is retried through short outages


@dataclass
class RunResult:
    outcome: Outcome
    job_id: str
    attempt: int = 0
    job: Job | None = None
    detail: str = ""
    duration_s: float = 0.0


@dataclass
class _Attempt:
    """Shared between the function's thread and the heartbeat thread."""

    job: Job
    deadline: float  # time.monotonic() at which the attempt times out
    progress: Progress | None = None
    progress_dirty: bool = False
    cancel_requested: bool = False
    cancel_seen_at: float | None = None  # time.monotonic() when the runner learnt of the request
    lease_lost: bool = False
    settled_by_watchdog: "RunResult | None" = None  # the heartbeat thread settled the attempt itself
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)


class RunContext:
    """The ``ctx`` a job function gets (see context.JobContext)."""

    def __init__(self, state: _Attempt, logger: logging.LoggerAdapter) -> None:
        self._state = state
        self.job_id = state.job.job_id
        self.attempt = state.job.attempt
        self.logger = logger

    def progress(self, fraction: float, message: str = "") -> None:
        self.raise_if_stopping()
        with self._state.lock:
            self._state.progress = Progress(fraction=min(1.0, max(0.0, float(fraction))), message=message[:1024])
            self._state.progress_dirty = True

    def cancelled(self) -> bool:
        return self._state.cancel_requested

    def remaining_s(self) -> float:
        return max(0.0, self._state.deadline - time.monotonic())

    def raise_if_stopping(self) -> None:
        if self._state.lease_lost:
            raise LeaseLost(self.job_id)
        if self._state.cancel_requested:
            raise JobCancelled(self.job_id)
        if time.monotonic() >= self._state.deadline:
            raise JobTimeout(self.job_id)

    raise_if_cancelled = raise_if_stopping

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while True:
            self.raise_if_stopping()
            left = end - time.monotonic()
            if left <= 0:
                return
            # Wake at once on cancel or a lost lease (the heartbeat sets the event), else at
            # the deadline or the end of the sleep.
            self._state.wake.wait(min(left, max(0.0, self._state.deadline - time.monotonic()) + 0.001))


class Runner:
    def __init__(self, lifecycle: Lifecycle, registry: Registry, config: RunnerConfig,
                 *, sleep: Callable[[float], None] = time.sleep, execute: Execute = execute_inline) -> None:
        self.lifecycle = lifecycle
        self.registry = registry
        self.config = config
        self._sleep = sleep
        self._execute = execute

    def run(self, job_id: str, *, expected_attempt: int | None = None, time_budget_s: float | None = None,
            correlation_id: str | None = None, claim_token: str | None = None) -> RunResult:
        """Claim and run one job. ``time_budget_s`` bounds the attempt below the job type's own
        timeout (the Lambda invocation's remaining time, less a margin). ``claim_token`` names this
        claimant's run of the message (a fresh one by default): a caller that tries the same claim
        again passes the same token, so a claim whose answer was lost is recognised as its own."""
        started = time.monotonic()
        token = claim_token or uuid.uuid4().hex
        try:
            job = self.lifecycle.claim(job_id, self.config.owner, self.config.lease_s, expected_attempt,
                                       claim_token=token)
        except RouteMismatch as exc:
            # A message for another route's job reached this worker (forged, or misrouted): the
            # job's own message is on its route's queue, so this one is dropped, loudly.
            log.warning("claim refused by the route fence; dropping the message",
                        extra={"job_id": job_id, "reason": str(exc), "route": exc.route, "job_route": exc.job_route,
                               "correlation_id": correlation_id})
            return RunResult(Outcome.REFUSED, job_id, detail=str(exc))
        except (InvalidTransition, JobNotFound) as exc:
            log.info("claim refused; dropping the message", extra={"job_id": job_id, "reason": str(exc),
                                                                    "correlation_id": correlation_id})
            return RunResult(Outcome.DROPPED, job_id, detail=str(exc))
        except DependencyUnavailable as exc:
            return RunResult(Outcome.UNSETTLED, job_id, detail=str(exc))
        logger = _JobLogger(log, {"job_id": job.job_id, "attempt": job.attempt,
                                  "correlation_id": job.correlation_id or correlation_id})
        result = self._run_claimed(job, logger, time_budget_s)
        result.duration_s = time.monotonic() - started
        logger.info("attempt settled", extra={"outcome": result.outcome.value, "duration_s": round(result.duration_s, 3)})
        return result

    # --- the claimed attempt ------------------------------------------------------------------

    def _run_claimed(self, job: Job, logger: logging.LoggerAdapter, time_budget_s: float | None) -> RunResult:
        try:
            jt = self.registry.get(job.type)
        except UnknownJobType as exc:
            # Not installed here (an agent without the operator's module): not retryable on this
            # worker, and retrying elsewhere would meet the same code, so the job fails.
            return self._settle(job, logger, "fail", JobError(type="UnknownJobType", message=str(exc)))
        timeout = float(jt.timeout_s if time_budget_s is None else min(jt.timeout_s, time_budget_s))
        state = _Attempt(job=job, deadline=time.monotonic() + timeout, cancel_requested=job.cancel_requested,
                         cancel_seen_at=time.monotonic() if job.cancel_requested else None)
        ctx = RunContext(state, logger)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(state, stop, logger), daemon=True,
                                name=f"heartbeat-{job.job_id}")
        beat.start()
        try:
            try:
                params = jt.parse_params(job.params)
                ctx.raise_if_stopping()
                value = self._execute(jt, params, ctx)
                action, payload = "complete", value
            except LeaseLost:
                action, payload = "abandon", None
            except JobCancelled:
                action, payload = ("abandon", None) if state.lease_lost else ("cancel", None)
            except WorkerShutdown as exc:  # ours, not the job's: handed back without spending a run
                action, payload = "release", f"{type(exc).__name__}: {exc}"
            except JobTimeout:
                action, payload = "fail", JobError(type="Timeout", message=f"the attempt ran past {timeout:.0f}s",
                                                   retryable=True)
            except JobFailure as exc:
                action, payload = "fail", JobError(type=type(exc).__name__, message=str(exc), retryable=exc.retryable)
            except JobBridgeError as exc:  # e.g. InvalidParams of a record written by an older version
                action, payload = "fail", JobError(type=type(exc).__name__, message=str(exc), retryable=False)
            except Exception as exc:  # noqa: BLE001 - a job's own bug: recorded, retried per its policy
                logger.exception("job raised")
                action, payload = "fail", JobError(type=type(exc).__name__, message=str(exc)[:2000], retryable=True)
        finally:
            stop.set()
            state.wake.set()
            beat.join(timeout=self.config.heartbeat_s + 5)
        if state.settled_by_watchdog is not None:
            return state.settled_by_watchdog
        if action == "abandon" or state.lease_lost:
            logger.warning("lease lost; abandoning without reporting")
            return RunResult(Outcome.ABANDONED, job.job_id, job.attempt)
        self._flush_progress(state, logger)
        return self._settle(job, logger, action, payload)

    def _settle(self, job: Job, logger: logging.LoggerAdapter, action: str, payload: Any) -> RunResult:
        delay = 0.2
        for attempt_no in range(self.config.settle_retries + 1):
            try:
                if action == "complete":
                    final = self.lifecycle.complete(job.job_id, job.attempt, payload)
                elif action == "cancel":
                    final = self.lifecycle.acknowledge_cancel(job.job_id, job.attempt)
                elif action == "release":
                    final = self.lifecycle.release(job.job_id, job.attempt, payload)
                    return RunResult(Outcome.RELEASED, job.job_id, job.attempt, final)
                else:
                    final = self.lifecycle.fail(job.job_id, job.attempt, payload, job.max_attempts, job.type)
                return RunResult(_outcome_of(final), job.job_id, job.attempt, final)
            except StaleAttempt as exc:
                logger.warning("fenced out: another attempt owns the job", extra={"reason": str(exc)})
                return RunResult(Outcome.ABANDONED, job.job_id, job.attempt, detail=str(exc))
            except InvalidTransition as exc:  # final meanwhile (e.g. dead-lettered): nothing to do
                logger.warning("job settled elsewhere", extra={"reason": str(exc)})
                return RunResult(Outcome.ABANDONED, job.job_id, job.attempt, detail=str(exc))
            except DependencyUnavailable as exc:
                if attempt_no == self.config.settle_retries:
                    logger.error("could not settle the job; its message will return", extra={"error": str(exc)})
                    return RunResult(Outcome.UNSETTLED, job.job_id, job.attempt, detail=str(exc))
                self._sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    # --- the heartbeat thread ---------------------------------------------------------------

    def _heartbeat_loop(self, state: _Attempt, stop: threading.Event, logger: logging.LoggerAdapter) -> None:
        cfg = self.config
        last_beat = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            with state.lock:
                dirty = state.progress_dirty
            due = now - last_beat >= cfg.heartbeat_s
            if due or dirty:
                if self._beat(state, logger):
                    last_beat = time.monotonic()
                if state.lease_lost or state.cancel_requested:
                    state.wake.set()
            if (state.cancel_seen_at is not None and time.monotonic() >= state.cancel_seen_at + cfg.cancel_grace_s
                    and state.settled_by_watchdog is None and not state.lease_lost):
                self._watchdog_cancel(state, logger)
                state.wake.set()
                if state.settled_by_watchdog is not None:
                    return
            if time.monotonic() >= state.deadline + cfg.timeout_grace_s and state.settled_by_watchdog is None:
                self._watchdog_fail(state, logger)
                state.wake.set()
                return
            stop.wait(cfg.progress_flush_s if dirty else min(cfg.progress_flush_s, cfg.heartbeat_s))

    def _beat(self, state: _Attempt, logger: logging.LoggerAdapter) -> bool:
        with state.lock:
            progress, state.progress_dirty = state.progress, False
        job = state.job
        try:
            fresh = self.lifecycle.heartbeat(job.job_id, job.attempt, self.config.owner, self.config.lease_s, progress)
        except (StaleAttempt, InvalidTransition, JobNotFound) as exc:
            state.lease_lost = True
            logger.warning("heartbeat refused: lease lost", extra={"reason": str(exc)})
            return False
        except DependencyUnavailable as exc:
            with state.lock:
                state.progress_dirty = state.progress_dirty or progress is not None
            logger.warning("heartbeat failed; retrying", extra={"error": str(exc)})
            return False
        except ItemTooLarge as exc:  # a record written before the size budget, at DynamoDB's limit
            logger.warning("heartbeat refused: the record cannot grow; progress dropped", extra={"error": str(exc)})
            return False
        if fresh.cancel_requested and not state.cancel_requested:
            logger.info("cancel requested")
            state.cancel_seen_at = time.monotonic()
            state.cancel_requested = True
        return True

    def _flush_progress(self, state: _Attempt, logger: logging.LoggerAdapter) -> None:
        with state.lock:
            dirty = state.progress_dirty
        if dirty:
            self._beat(state, logger)

    def _watchdog_fail(self, state: _Attempt, logger: logging.LoggerAdapter) -> None:
        """The function ignored its timeout: fail the attempt for it, so the job retries while
        this thread of execution is stuck; its own late writes will be fenced out."""
        job = state.job
        try:
            final = self.lifecycle.fail(job.job_id, job.attempt,
                                        JobError(type="Timeout", message="the attempt ignored its timeout", retryable=True),
                                        job.max_attempts, job.type)
        except (InvalidTransition, JobNotFound, DependencyUnavailable) as exc:
            logger.warning("watchdog could not fail the attempt", extra={"error": str(exc)})
            return
        state.settled_by_watchdog = RunResult(_outcome_of(final), job.job_id, job.attempt, final,
                                              detail="timed out (watchdog)")
        state.lease_lost = True
        logger.error("attempt failed by the watchdog: the function ignored its timeout")

    def _watchdog_cancel(self, state: _Attempt, logger: logging.LoggerAdapter) -> None:
        """The function ignored the cancel request for ``cancel_grace_s``: end the job CANCELLED
        (forced) for it. Its thread is left behind (Lambda and Batch cannot kill a thread; the Batch
        job itself is terminated by the stream, jobbridge.batch); its late writes are fenced out.
        Tried again at the next beat when the write could not be made."""
        job = state.job
        try:
            final = self.lifecycle.acknowledge_cancel(job.job_id, job.attempt, forced=True)
        except DependencyUnavailable as exc:
            logger.warning("could not record the forced cancel; trying again", extra={"error": str(exc)})
            return
        except (InvalidTransition, JobNotFound) as exc:  # settled or taken over meanwhile
            state.lease_lost = True
            logger.warning("forced cancel refused: the job moved on", extra={"error": str(exc)})
            return
        state.settled_by_watchdog = RunResult(_outcome_of(final), job.job_id, job.attempt, final,
                                              detail="cancelled (forced)")
        state.lease_lost = True
        logger.error("job cancelled by force: the function ignored the cancel request",
                     extra={"grace_s": self.config.cancel_grace_s})


def _outcome_of(job: Job) -> Outcome:
    return {
        "SUCCEEDED": Outcome.SUCCEEDED,
        "FAILED": Outcome.FAILED,
        "CANCELLED": Outcome.CANCELLED,
        "QUEUED": Outcome.RETRY_SCHEDULED,
    }.get(job.state.value, Outcome.ABANDONED)
