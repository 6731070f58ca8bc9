"""The bridge's logic: DynamoDB stream batch in, messages out, partial failures reported.

It also stops work a cancel made pointless: a job cancelled with a submitted AWS Batch job gets
its Batch job terminated (jobbridge.batch.batch_job_to_stop), so a cancel costs the API one
conditional write and no Batch call, and no GPU host starts for nothing.

Stream records of one job arrive in order; if a send fails, its record and (per Lambda's
checkpointing) every later record of the batch are retried, so a failure can duplicate sends but
never skip one: https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .batch import BatchApi, BatchRequestRejected, batch_job_to_stop, stop_reason
from .dispatch import Dispatcher, dispatch_of
from .errors import DependencyUnavailable
from .store import JobStore

log = logging.getLogger(__name__)


@dataclass
class OutboxResult:
    sent: int = 0
    skipped: int = 0
    terminated: int = 0
    failed_record_ids: list[str] = field(default_factory=list)

    def batch_response(self) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": rid} for rid in self.failed_record_ids]}


def relay(records: list[dict[str, Any]], dispatcher: Dispatcher, store: JobStore,
          batch: BatchApi | None = None) -> OutboxResult:
    result = OutboxResult()
    dispatches = []
    for record in records:
        d = dispatch_of(record)
        if d is not None:
            dispatches.append(d)
        elif batch is not None and (stop := batch_job_to_stop(record)) is not None:
            if _terminate(batch, stop.job_id, stop.batch_job_id):
                result.terminated += 1
            else:
                result.failed_record_ids.append(record["dynamodb"]["SequenceNumber"])
        else:
            result.skipped += 1
    sent, failed = dispatcher.send(dispatches)
    result.sent = len(sent)
    result.failed_record_ids += [d.record_id for d in failed]
    for d in sent:
        try:
            # Recording is best effort: the message is out, and a job that moved on (claimed
            # already, cancelled) rightly refuses the write.
            store.mark_dispatched(d.job_id, d.attempt, d.look_again_at(store.clock()))
        except DependencyUnavailable as exc:
            log.warning("could not record dispatched_at", extra={"job_id": d.job_id, "error": str(exc)})
        log.info("dispatched", extra={"job_id": d.job_id, "route": d.route.value, "attempt": d.attempt,
                                      "correlation_id": d.correlation_id, "delay_s": d.delay_s})
    for d in failed:
        log.error("dispatch failed; the stream will retry", extra={"job_id": d.job_id, "route": d.route.value})
    return result


def _terminate(batch: BatchApi, job_id: str, batch_job_id: str) -> bool:
    """TerminateJob for a cancelled job. False when Batch could not be reached (the stream retries
    the record); a refusal (an unknown or long-gone Batch job) has nothing left to stop."""
    try:
        batch.terminate_job(batch_job_id, stop_reason(job_id))
    except DependencyUnavailable as exc:
        log.warning("could not terminate the Batch job; the stream will retry",
                    extra={"job_id": job_id, "batch_job_id": batch_job_id, "error": str(exc)})
        return False
    except BatchRequestRejected as exc:
        log.warning("Batch refused to terminate; nothing to stop", extra={"job_id": job_id, "error": str(exc)})
        return True
    log.info("cancelled job's Batch job terminated", extra={"job_id": job_id, "batch_job_id": batch_job_id})
    return True
