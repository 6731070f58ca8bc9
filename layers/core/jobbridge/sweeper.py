"""The sweeper: the backstop for what the event-driven paths can miss. Idempotent: running it
twice, or alongside the bridge and the workers, changes nothing twice (every write is
conditional).

- A QUEUED job with no ``dispatched_at`` well after it became due: its stream record was lost
  (the stream was down past its 24 h retention, or the bridge's retries ran out). Send it again.
- A RUNNING job whose lease lapsed with no heartbeat: its worker died. Requeue it if attempts
  remain (after backoff), else FAILED as lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from .dispatch import Dispatch, Dispatcher
from .errors import InvalidTransition, JobNotFound
from .ids import iso
from .lifecycle import JobLifecycle
from .models import JobError, Route, State

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    redispatched: int = 0
    redispatch_failed: int = 0
    leases_requeued: int = 0
    leases_failed: int = 0
    skipped: int = 0
    job_ids: list[str] = field(default_factory=list)


class Sweeper:
    def __init__(self, lifecycle: JobLifecycle, dispatcher: Dispatcher, *, dispatch_grace_s: float = 120.0,
                 max_items: int = 1000) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.dispatcher = dispatcher
        self.dispatch_grace_s = dispatch_grace_s
        self.max_items = max_items

    def sweep(self) -> SweepReport:
        report = SweepReport()
        self._redispatch(report)
        self._expire_leases(report)
        return report

    def _redispatch(self, report: SweepReport) -> None:
        due = iso(self.store.clock() - timedelta(seconds=self.dispatch_grace_s))
        pending = []
        for item in self.store.active_jobs(State.QUEUED, due):
            if item.get("dispatched_at"):
                continue  # sent; waiting in its queue (private jobs may wait for an agent)
            # The same message the bridge would send (dispatch.dispatch_of): with the expected
            # runtime, or the Lambda worker would judge the job by its whole timeout.
            pending.append(Dispatch(record_id=item["job_id"], job_id=item["job_id"], route=Route(item["route"]),
                                    attempt=int(item.get("attempt", 0)), correlation_id=item.get("correlation_id"),
                                    timeout_s=item.get("timeout_s"),
                                    expected_runtime_s=(item.get("requirements") or {}).get("expected_runtime_s")))
            if len(pending) >= self.max_items:
                break
        if not pending:
            return
        sent, failed = self.dispatcher.send(pending)
        for d in sent:
            self.store.mark_dispatched(d.job_id, d.attempt)
            report.job_ids.append(d.job_id)
            log.warning("re-dispatched a job the stream missed", extra={"job_id": d.job_id, "route": d.route.value})
        report.redispatched += len(sent)
        report.redispatch_failed += len(failed)

    def _expire_leases(self, report: SweepReport) -> None:
        now = iso(self.store.clock())
        for count, item in enumerate(self.store.active_jobs(State.RUNNING, now)):
            if count >= self.max_items:
                break
            job_id, attempt = item["job_id"], int(item.get("attempt", 0))
            max_attempts = int(item.get("max_attempts", 1)) + int(item.get("releases", 0))  # Job.attempt_budget
            lost = JobError(type="LeaseExpired", retryable=True,
                            message=f"no heartbeat from {item.get('lease_owner', 'its worker')} since the lease "
                                    f"lapsed at {item.get('lease_expires_at')} (attempt {attempt} of {max_attempts})")
            delay = None
            if attempt < max_attempts:
                delay = self.lifecycle.backoff_s(item.get("type", ""), attempt)
            try:
                job = self.store.expire_lease(job_id, attempt, lost, delay)
            except (InvalidTransition, JobNotFound):
                report.skipped += 1  # a heartbeat or a settle got there first
                continue
            report.job_ids.append(job_id)
            if job.state is State.QUEUED:
                report.leases_requeued += 1
            else:
                report.leases_failed += 1
            log.warning("lease expired", extra={"job_id": job_id, "attempt": attempt, "state": job.state.value})
