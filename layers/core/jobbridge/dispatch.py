"""The outbox's sending half: turn stream records of jobs that need a message into SQS sends.

A record needs dispatch when its new image is QUEUED and carries no ``dispatched_at``: a new job,
or a job put back for a retry (the retry removes ``dispatched_at``). The bridge's own
``mark_dispatched`` write produces a record with ``dispatched_at`` and so never loops. A
duplicate stream record sends a duplicate message; the claim's condition drops it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .dynamo_codec import decode_item
from .ids import iso, parse_iso, utcnow
from .models import Route, State

log = logging.getLogger(__name__)

SQS_MAX_BATCH = 10  # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
SQS_MAX_DELAY_S = 900
# A waiting job's message is sent again this long after the last send (by the sweeper; the claim's
# fence drops a duplicate): a message lost to retention, a purge or a consumer's bug is replaced.
REDISPATCH_AFTER_S = 6 * 3600
# A Batch job's message is sent again sooner: batch_submit then asks Batch (DescribeJobs) what became
# of the attempt's Batch job, whose state-change event may have been lost (jobbridge.batch).
BATCH_CHECK_AFTER_S = 15 * 60


@dataclass(frozen=True)
class Dispatch:
    """One message to send, tied to the stream record it came from."""

    record_id: str  # the stream record's SequenceNumber (what a partial failure reports)
    job_id: str
    route: Route
    attempt: int
    correlation_id: str | None
    delay_s: int = 0
    timeout_s: int | None = None
    expected_runtime_s: int | None = None
    queue_deadline: int | None = None  # epoch seconds (Job.queue_deadline)

    def look_again_at(self, now: datetime) -> str:
        """When the sweeper must next look at the job once this message is sent: at the next
        re-send, or at its queue-wait deadline if that comes first (its ``due_at``)."""
        at = now + timedelta(seconds=BATCH_CHECK_AFTER_S if self.route is Route.BATCH else REDISPATCH_AFTER_S)
        if self.queue_deadline is not None:
            at = min(at, datetime.fromtimestamp(self.queue_deadline, tz=timezone.utc))
        return iso(at)

    def body(self) -> str:
        # What a consumer needs to decide before claiming (can it finish in the time it has?),
        # never the params: they stay in the table, behind the claim.
        return json.dumps(
            {"job_id": self.job_id, "route": self.route.value, "attempt": self.attempt,
             "correlation_id": self.correlation_id, "timeout_s": self.timeout_s,
             "expected_runtime_s": self.expected_runtime_s},
            separators=(",", ":"),
        )


def dispatch_of(record: dict[str, Any]) -> Dispatch | None:
    """The message a DynamoDB stream record calls for, or None."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    stream = record["dynamodb"]
    image = stream.get("NewImage")
    if not image or image.get("state", {}).get("S") != State.QUEUED.value or "dispatched_at" in image:
        return None
    job = decode_item({k: image[k] for k in ("job_id", "route", "attempt", "correlation_id", "not_before",
                                              "timeout_s", "requirements", "queue_deadline") if k in image})
    delay = 0
    if job.get("not_before"):
        delay = int(max(0.0, min(SQS_MAX_DELAY_S, (parse_iso(job["not_before"]) - utcnow()).total_seconds())))
    return Dispatch(
        record_id=stream["SequenceNumber"],
        job_id=job["job_id"],
        route=Route(job["route"]),
        attempt=int(job.get("attempt", 0)),
        correlation_id=job.get("correlation_id"),
        delay_s=delay,
        timeout_s=job.get("timeout_s"),
        expected_runtime_s=(job.get("requirements") or {}).get("expected_runtime_s"),
        queue_deadline=job.get("queue_deadline"),
    )


class Dispatcher:
    """Sends dispatches to their route's queue, ten to a SendMessageBatch call."""

    def __init__(self, queue_urls: dict[Route, str], *, client: Any = None) -> None:
        self.queue_urls = queue_urls
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("sqs")
        return self._client

    def send(self, dispatches: Iterable[Dispatch]) -> tuple[list[Dispatch], list[Dispatch]]:
        """Send them all; returns (sent, failed). Never raises for a failed send."""
        by_route: dict[Route, list[Dispatch]] = {}
        for d in dispatches:
            by_route.setdefault(d.route, []).append(d)
        sent: list[Dispatch] = []
        failed: list[Dispatch] = []
        for route, items in by_route.items():
            for start in range(0, len(items), SQS_MAX_BATCH):
                chunk = items[start : start + SQS_MAX_BATCH]
                ok, bad = self._send_batch(self.queue_urls[route], chunk)
                sent.extend(ok)
                failed.extend(bad)
        return sent, failed

    def _send_batch(self, queue_url: str, chunk: list[Dispatch]) -> tuple[list[Dispatch], list[Dispatch]]:
        entries = [
            {
                "Id": str(index),
                "MessageBody": d.body(),
                "DelaySeconds": d.delay_s,
                "MessageAttributes": {"job_id": {"DataType": "String", "StringValue": d.job_id}},
            }
            for index, d in enumerate(chunk)
        ]
        try:
            out = self.client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            log.warning("send_message_batch failed", extra={"queue_url": queue_url, "error": str(exc), "count": len(chunk)})
            return [], list(chunk)
        failed_ids = {f["Id"] for f in out.get("Failed", [])}
        for failure in out.get("Failed", []):
            log.warning("message not sent", extra={"job_id": chunk[int(failure["Id"])].job_id, "code": failure.get("Code")})
        ok = [d for i, d in enumerate(chunk) if str(i) not in failed_ids]
        bad = [d for i, d in enumerate(chunk) if str(i) in failed_ids]
        return ok, bad

    def ping(self) -> dict[Route, str | None]:
        """For the health check: each queue's error, or None when it answers."""
        status: dict[Route, str | None] = {}
        for route, url in self.queue_urls.items():
            try:
                self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                status[route] = None
            except (ClientError, BotoCoreError) as exc:
                code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
                status[route] = code
        return status
