"""The sweeper: the backstop for what the event-driven paths can miss. Idempotent: running it
twice, or alongside the bridge and the workers, changes nothing twice (every write is
conditional). It reads only what is due: the sparse ``active-index`` by ``due_at``, where a RUNNING
job is due when its lease lapses and a QUEUED one when something must happen to it (it became
due and was never sent; its message is due to be sent again; its queue-wait deadline passed).
A backlog of waiting jobs is not read until then. Lapsed leases come first.

- A RUNNING job whose lease lapsed with no heartbeat: its worker died. Requeue it if attempts
  remain (after backoff), else FAILED as lost.
- A QUEUED job past its queue-wait deadline: FAILED as QueueWaitExpired (a claim that lands first
  wins). Every accepted job so ends, even when no worker ever takes it.
- A QUEUED job with no ``dispatched_at`` well after it became due: its stream record was lost
  (the stream was down past its 24 h retention, or the bridge's retries ran out). Send it.
- A QUEUED job dispatched REDISPATCH_AFTER_S ago and still waiting: its message may be lost (SQS
  retention, a purge). Send it again; a duplicate is dropped by the claim's fence.

Each job is handled on its own: one that cannot be written (a record DynamoDB refuses to grow, a
record an older version wrote that no longer decodes) is logged with its id and counted in
``errors``, and the sweep goes on to the others: lapsed leases of every tenant keep being recovered.
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
    resent: int = 0
    redispatch_failed: int = 0
    queue_waits_expired: int = 0
    leases_requeued: int = 0
    leases_failed: int = 0
    leases_cancelled: int = 0
    skipped: int = 0
    errors: int = 0  # jobs that could not be handled (logged with their ids); the rest were
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
        self._expire_leases(report)  # first: a backlog of waiting jobs must not delay recovering a lost worker's
        self._queued(report)
        return report

    def _queued(self, report: SweepReport) -> None:
        now = self.store.clock()
        due = iso(now - timedelta(seconds=self.dispatch_grace_s))
        pending: list[tuple[Dispatch, bool]] = []
        for count, item in enumerate(self.store.active_jobs(State.QUEUED, due)):
            if count >= self.max_items:
                break
            deadline = item.get("queue_deadline")
            if deadline is not None and int(deadline) < int(now.timestamp()):
                try:
                    self._expire_queue_wait(item, report)
                except Exception:  # noqa: BLE001 - one job's failure must not stop the sweep (logged, counted)
                    self._count_error(report, item.get("job_id"), "end a queue wait")
                continue
            # The same message the bridge would send (dispatch.dispatch_of): with the expected
            # runtime, or the Lambda worker would judge the job by its whole timeout.
            pending.append((Dispatch(record_id=item["job_id"], job_id=item["job_id"], route=Route(item["route"]),
                                     attempt=int(item.get("attempt", 0)), correlation_id=item.get("correlation_id"),
                                     timeout_s=item.get("timeout_s"),
                                     expected_runtime_s=(item.get("requirements") or {}).get("expected_runtime_s"),
                                     queue_deadline=deadline),
                            bool(item.get("dispatched_at"))))
        if not pending:
            return
        again = {d.job_id for d, was_sent in pending if was_sent}
        sent, failed = self.dispatcher.send([d for d, _ in pending])
        for d in sent:
            try:
                self.store.mark_dispatched(d.job_id, d.attempt, d.look_again_at(now))
            except Exception:  # noqa: BLE001 - one job's failure must not stop the sweep (logged, counted)
                self._count_error(report, d.job_id, "mark dispatched")
                continue
            report.job_ids.append(d.job_id)
            if d.job_id in again:
                report.resent += 1
                log.warning("sent a waiting job's message again", extra={"job_id": d.job_id, "route": d.route.value})
            else:
                report.redispatched += 1
                log.warning("re-dispatched a job the stream missed", extra={"job_id": d.job_id, "route": d.route.value})
        report.redispatch_failed += len(failed)

    def _expire_queue_wait(self, item: dict, report: SweepReport) -> None:
        job_id, attempt = item["job_id"], int(item.get("attempt", 0))
        try:
            self.store.expire_queue_wait(job_id, attempt)
        except (InvalidTransition, JobNotFound):
            report.skipped += 1  # claimed, cancelled or queued afresh meanwhile
            return
        report.queue_waits_expired += 1
        report.job_ids.append(job_id)
        log.warning("queue wait expired", extra={"job_id": job_id, "attempt": attempt, "route": item.get("route")})

    def _expire_leases(self, report: SweepReport) -> None:
        now = iso(self.store.clock())
        for count, item in enumerate(self.store.active_jobs(State.RUNNING, now)):
            if count >= self.max_items:
                break
            try:
                self._expire_lease(item, report)
            except Exception:  # noqa: BLE001 - one job's failure must not stop the sweep (logged, counted)
                self._count_error(report, item.get("job_id"), "end a lapsed lease")

    def _expire_lease(self, item: dict, report: SweepReport) -> None:
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
            return
        report.job_ids.append(job_id)
        if job.state is State.QUEUED:
            report.leases_requeued += 1
        elif job.state is State.CANCELLED:
            report.leases_cancelled += 1  # its cancel was requested: it ends as asked
        else:
            report.leases_failed += 1
        log.warning("lease expired", extra={"job_id": job_id, "attempt": attempt, "state": job.state.value})

    @staticmethod
    def _count_error(report: SweepReport, job_id: object, action: str) -> None:
        report.errors += 1
        log.exception("sweeper could not %s; going on with the others", action, extra={"job_id": job_id})
