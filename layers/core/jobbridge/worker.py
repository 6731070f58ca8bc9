"""The Lambda worker's logic, one SQS record at a time (the handler wraps it in Powertools'
batch processor for partial batch responses).

A job that cannot finish in the invocation's remaining time is not started: a fresh copy of its
message is sent for another invocation and the record is acknowledged. Making the old message
visible again (visibility 0) would spend one of its maxReceiveCount receives per hand-back, so with
WorkerBatchSize > 1 a job handed back five times was dead-lettered and FAILED without having run;
the copy starts at receive count 0 (a duplicate copy is dropped by the claim's fence). A started job gets the remaining
time less a margin as its budget, so the runner fails it as a retryable timeout before Lambda
kills the invocation.

What a job needs is capped at what a fresh invocation offers (``invocation_s``, the time the
invocation had when it began): a job that may need more than the function's whole timeout (a
timeout of 900 s on a 900 s worker) is started by a fresh invocation rather than handed back on
every receive until its message is dead-lettered. It runs until the budget, then fails as a
retryable Timeout like any job that outruns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from .errors import DependencyUnavailable
from .messages import JobMessage
from .queues import Queue
from .routing import WORKER_START_MARGIN_S
from .runner import Outcome, Runner, RunResult

log = logging.getLogger(__name__)


class NotSettled(Exception):
    """The record must go back to the queue (deferred, or its final write failed)."""


@dataclass(frozen=True)
class Deferred:
    job_id: str
    needed_s: float
    budget_s: float


class InvocationTime:
    """The invocation's remaining time, read once per record.

    ``invocation_s`` is read once, when the invocation begins: what a fresh invocation offers.
    The first record is judged by that very reading and each later record by one reading of its
    own, so whether a record is the invocation's first (and may take a job that needs all of it)
    never turns on the millisecond that passes between two readings of the clock.
    """

    def __init__(self, remaining_ms: Callable[[], int]) -> None:
        self._remaining_ms = remaining_ms
        self.invocation_s = remaining_ms() / 1000
        self._first_taken = False

    def remaining_s(self) -> float:
        if not self._first_taken:
            self._first_taken = True
            return self.invocation_s
        return self._remaining_ms() / 1000


class QueueWorker:
    def __init__(self, runner: Runner, queue: Queue, *, safety_margin_s: float = WORKER_START_MARGIN_S) -> None:
        self.runner = runner
        self.queue = queue
        self.safety_margin_s = safety_margin_s

    def process(self, message: JobMessage, receipt_handle: str, remaining_s: float,
                invocation_s: float | None = None) -> RunResult:
        """Run the job of one record with ``remaining_s`` left in the invocation, which had
        ``invocation_s`` when it began (None: assume ``remaining_s``)."""
        budget = remaining_s - self.safety_margin_s
        fresh_budget = max(budget, (invocation_s if invocation_s is not None else remaining_s) - self.safety_margin_s)
        needed = min(message.time_needed_s, fresh_budget)
        if needed > budget or budget <= 0:
            return self._hand_back(message, receipt_handle, needed, budget)
        result = self.runner.run(message.job_id, expected_attempt=message.attempt, time_budget_s=budget,
                                 correlation_id=message.correlation_id)
        if result.outcome is Outcome.UNSETTLED and result.attempt == 0:
            # The claim could not be made (DynamoDB unavailable): an outage of ours, so the message
            # comes back as a fresh copy after a short backoff and spends none of its receives.
            try:
                delay = self.queue.send_again(message)
            except DependencyUnavailable:
                raise NotSettled(f"job {message.job_id}: {result.detail}") from None
            log.warning("could not claim through an outage; the message comes back later",
                        extra={"job_id": message.job_id, "error": result.detail, "retry_in_s": delay})
            return RunResult(Outcome.HANDED_BACK, message.job_id, detail=result.detail)
        if not result.outcome.acknowledges:
            raise NotSettled(f"job {message.job_id}: {result.detail}")
        return result

    def _hand_back(self, message: JobMessage, receipt_handle: str, needed: float, budget: float) -> RunResult:
        extra = {"job_id": message.job_id, "needed_s": message.time_needed_s, "budget_s": round(budget, 1)}
        try:
            self.queue.send(message.model_dump_json())
        except DependencyUnavailable as exc:
            # SQS refused the copy: return the record itself (one receive spent) rather than lose it.
            self.queue.change_visibility(receipt_handle, 0)
            log.warning("not enough time left to start; message returned", extra={**extra, "error": str(exc)})
            raise NotSettled(f"job {message.job_id} needs {needed:.0f}s, {budget:.0f}s left") from exc
        log.info("not enough time left to start; handed back as a fresh message", extra=extra)
        return RunResult(Outcome.HANDED_BACK, message.job_id, detail=f"needs {needed:.0f}s, {budget:.0f}s left")


__all__ = ["QueueWorker", "NotSettled", "Outcome"]
