"""Server-side transitions with policy: the one place that decides retry vs FAILED, backoff,
result limits. The Lambda worker and the Batch container call it directly; the agent reaches
the same code through the API's /agent routes, so a job's fate is decided identically wherever
it ran.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from .dynamo_codec import is_unicode_text
from .errors import ItemTooLarge, TooLarge, UnknownJobType
from .limits import check_result
from .models import Job, JobError, Progress
from .registry import Backoff, Registry
from .store import JobStore


class JobLifecycle:
    def __init__(self, store: JobStore, registry: Registry, *, rng: Callable[[], float] = random.random) -> None:
        self.store = store
        self.registry = registry
        self.rng = rng

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              claim_token: str | None = None) -> Job:
        return self.store.claim(job_id, owner, lease_s, expected_attempt, claim_token=claim_token)

    def heartbeat(self, job_id: str, attempt: int, owner: str, lease_s: float, progress: Progress | None = None) -> Job:
        return self.store.heartbeat(job_id, attempt, owner, lease_s, progress)

    def complete(self, job_id: str, attempt: int, result: Any) -> Job:
        """SUCCEEDED with the result; a result that cannot be stored fails the job, not retryable
        (the same code would return the same result), and never as a lost write."""
        if not is_unicode_text(result):
            return self.fail(job_id, attempt, JobError(
                type="ResultNotJSON", message="the result holds a lone surrogate (\\ud800-\\udfff): not Unicode text"))
        try:
            check_result(result)
        except TooLarge as exc:
            # Large payloads (result_ref in S3) are not supported yet: say so rather than truncate.
            return self.fail(job_id, attempt, JobError(type="ResultTooLarge", message=f"the result {exc}"))
        except (TypeError, ValueError) as exc:
            return self.fail(job_id, attempt, JobError(type="ResultNotJSON", message=f"the result is not JSON: {exc}"))
        try:
            return self.store.complete(job_id, attempt, result)
        except ItemTooLarge as exc:
            # Within its share, yet the record cannot hold it (a record from before the budget).
            # DynamoDB refused the whole write, so the job is still RUNNING at this attempt.
            return self.fail(job_id, attempt, JobError(type="ResultTooLarge", message=f"the result could not be "
                                                       f"stored with the job: {exc}"))

    def fail(self, job_id: str, attempt: int, error: JobError, max_attempts: int | None = None,
             job_type: str | None = None) -> Job:
        """Retry with exponential backoff and full jitter if the error is retryable and attempts
        remain; otherwise FAILED. ``max_attempts`` and ``job_type`` come from the claimed job."""
        if max_attempts is None or job_type is None:
            job = self.store.get(job_id)
            max_attempts, job_type = job.attempt_budget, job.type
        delay = None
        if error.retryable and attempt < max_attempts:
            delay = self.backoff_s(job_type, attempt)
        return self.store.fail(job_id, attempt, error, delay)

    def acknowledge_cancel(self, job_id: str, attempt: int, *, forced: bool = False) -> Job:
        return self.store.acknowledge_cancel(job_id, attempt, forced=forced)

    def release(self, job_id: str, attempt: int, reason: str) -> Job:
        """Hand a job back unfinished (its worker shuts down): QUEUED again at once, no run spent."""
        return self.store.release(job_id, attempt, reason)

    def backoff_s(self, job_type: str, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]
        (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/)."""
        try:
            backoff = self.registry.get(job_type).backoff
        except UnknownJobType:
            backoff = Backoff()
        return round(self.rng() * backoff.ceiling(attempt), 3)
