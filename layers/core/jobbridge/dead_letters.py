"""A message in a dead-letter queue means its job could not be run from it in N receives. The
letter applies to the attempt its message names, and only while the job is QUEUED for that
attempt: then the job is FAILED with that reason. A stale letter (a duplicate of a message whose
job another worker claimed, or that was retried since), a letter of a final job, or one that names
no attempt changes nothing (a job left QUEUED is ended by its queue-wait deadline)."""

from __future__ import annotations

import logging

from .errors import JobNotFound
from .messages import attempt_of, job_id_of
from .models import JobError
from .store import JobStore

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def handle(self, body: str, receives: int, source_arn: str | None = None) -> str:
        """Returns what happened: ``failed``, ``stale`` (final, or not QUEUED for the letter's
        attempt), ``unknown_job`` or ``unreadable``."""
        job_id, attempt = job_id_of(body), attempt_of(body)
        if job_id is None or attempt is None:
            log.error("unreadable dead letter dropped", extra={"body": body[:500], "source": source_arn})
            return "unreadable"
        error = JobError(type="DeadLettered", retryable=False,
                         message=f"dead-lettered after {receives} receives" + (f" from {source_arn}" if source_arn else ""))
        try:
            job = self.store.fail_dead_lettered(job_id, attempt, error)
        except JobNotFound:
            log.error("dead letter for an unknown job", extra={"job_id": job_id})
            return "unknown_job"
        if job is None:
            log.info("dead letter of an attempt the job is not waiting for; nothing to do",
                     extra={"job_id": job_id, "attempt": attempt})
            return "stale"
        log.warning("job dead-lettered", extra={"job_id": job_id, "attempt": attempt, "receives": receives})
        return "failed"
