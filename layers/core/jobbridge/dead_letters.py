"""A message in a dead-letter queue means its job could not be run in N receives: the job is
FAILED with that reason, unless it is already final (then nothing changes)."""

from __future__ import annotations

import logging

from .errors import JobNotFound
from .messages import job_id_of
from .models import JobError
from .store import JobStore

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def handle(self, body: str, receives: int, source_arn: str | None = None) -> str:
        """Returns what happened: ``failed``, ``already_final``, ``unknown_job`` or ``unreadable``."""
        job_id = job_id_of(body)
        if job_id is None:
            log.error("unreadable dead letter dropped", extra={"body": body[:500], "source": source_arn})
            return "unreadable"
        error = JobError(type="DeadLettered", retryable=False,
                         message=f"dead-lettered after {receives} receives" + (f" from {source_arn}" if source_arn else ""))
        try:
            job = self.store.fail_unless_final(job_id, error)
        except JobNotFound:
            log.error("dead letter for an unknown job", extra={"job_id": job_id})
            return "unknown_job"
        if job is None:
            log.info("dead letter for a final job; nothing to do", extra={"job_id": job_id})
            return "already_final"
        log.warning("job dead-lettered", extra={"job_id": job_id, "receives": receives})
        return "failed"
