"""Emulate Lambda's SQS event source mapping: long-poll a queue, invoke a function, delete what succeeded.

What Lambda does, and so what this does (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html,
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html):

- long-polls the queue (``WaitTimeSeconds`` 20) with the queue's own visibility timeout, and invokes
  the function with up to ``BatchSize`` messages, in the event shape Lambda uses (``{"Records":
  [...]}`` with messageId, receiptHandle, body, attributes, messageAttributes, md5OfBody,
  eventSource ``aws:sqs``, eventSourceARN, awsRegion);
- with ``MaximumBatchingWindowInSeconds``, keeps receiving after the first message until the batch
  is full, the window is over, or the payload reaches 6 MB;
- drops (deletes) messages that match none of ``FilterCriteria`` without invoking;
- on success deletes the batch (``DeleteMessageBatch``); with ``ReportBatchItemFailures`` a response
  ``{"batchItemFailures": [{"itemIdentifier": messageId}]}`` keeps the listed messages and deletes
  the rest; an empty or null list is success; an empty, missing or unknown itemIdentifier fails the
  whole batch. A function error (an exception, a timeout) fails the whole batch;
- a failed message is not touched: it becomes visible again when its visibility timeout ends, and
  SQS itself moves it to the dead-letter queue once it was received ``maxReceiveCount`` times (the
  queue's RedrivePolicy; moto applies it on receive as SQS does, moto/sqs/models.py receive_message);
- runs up to ``ScalingConfig.MaximumConcurrency`` batches at once (one consumer thread each; without
  it, one at a time locally, where Lambda would scale out further).

The function's concurrency safety is the caller's business: ``invoke`` is called from up to
``concurrency`` threads at once (the stack hands it a pool of one process per execution environment,
``instances.FunctionInstances``, as Lambda runs each concurrent batch in its own environment).

Not emulated: the poller scaling curve, FIFO ordering per message group, the 6 MB limit on the
invocation payload (the batch stops growing there instead), and ``MaximumRetryAttempts``-like
settings (SQS mappings have none: the redrive policy is the retry limit).

The poller is a library class with a lifecycle: ``run()`` blocks until ``shutdown()``, which only
sets a flag; a batch being processed finishes first, a batch received after the flag is handed back
at once (visibility 0). Signals belong to the CLI.

Example::

    mapping = SqsMapping.from_event_source(source, queue_url)
    poller = SqsPoller(mapping, invoke=function.invoke, sqs_client=sqs)
    threading.Thread(target=poller.run).start()
    ...
    poller.shutdown()
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from .event_filter import matches_any, parse_filters
from .template import EventSource

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10  # Lambda's default for SQS
LONG_POLL_SECONDS = 20  # what Lambda's pollers use, and SQS's maximum
MAX_RECEIVE = 10  # messages per ReceiveMessage call
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # a synchronous invocation's payload limit
DEFAULT_CONCURRENCY = 1  # locally, without ScalingConfig.MaximumConcurrency
ERROR_BACKOFF_SECONDS = 1.0

# System attributes Lambda copies into a record's "attributes" (the last four only when present).
RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)

Invoke = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class SqsMapping:
    """The settings of one SQS event source mapping that the poller honours."""

    queue_arn: str
    queue_url: str
    batch_size: int = DEFAULT_BATCH_SIZE
    maximum_batching_window_s: int = 0
    report_batch_item_failures: bool = False
    maximum_concurrency: int | None = None
    filters: list[dict[str, Any]] = field(default_factory=list)  # parsed FilterCriteria patterns
    enabled: bool = True
    function_logical_id: str = ""
    event_name: str = ""

    @classmethod
    def from_event_source(cls, source: EventSource, queue_url: str) -> "SqsMapping":
        """From a SAM ``Type: SQS`` event whose properties are resolved.

        https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-sqs.html
        """
        props = source.properties
        scaling = props.get("ScalingConfig") or {}
        maximum = scaling.get("MaximumConcurrency")
        return cls(
            queue_arn=props["Queue"],
            queue_url=queue_url,
            batch_size=int(props.get("BatchSize", DEFAULT_BATCH_SIZE)),
            maximum_batching_window_s=int(props.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
            maximum_concurrency=int(maximum) if maximum is not None else None,
            filters=parse_filters((props.get("FilterCriteria") or {}).get("Filters")),
            enabled=_truthy(props.get("Enabled", True)),
            function_logical_id=source.function_logical_id,
            event_name=source.name,
        )

    @property
    def concurrency(self) -> int:
        """Batches this mapping runs at once locally."""
        return max(1, self.maximum_concurrency or DEFAULT_CONCURRENCY)


@dataclass
class BatchResult:
    """What one invocation did to its messages (``poll_once``'s answer, for tests and logs)."""

    received: int = 0
    invoked: int = 0  # records handed to the function (after filtering)
    deleted: list[str] = field(default_factory=list)  # message ids
    failed: list[str] = field(default_factory=list)  # message ids left to return after their visibility
    filtered: list[str] = field(default_factory=list)  # message ids dropped by FilterCriteria
    released: list[str] = field(default_factory=list)  # handed back unprocessed (shutdown)
    function_error: str | None = None  # the whole batch failed: why


class SqsPoller:
    """Polls one queue for one function. ``poll_once()`` is one receive-invoke-delete cycle, for tests."""

    def __init__(
        self,
        mapping: SqsMapping,
        invoke: Invoke,
        sqs_client: Any,
        region: str = "us-east-1",
        wait_time_s: int = LONG_POLL_SECONDS,
        error_backoff_s: float = ERROR_BACKOFF_SECONDS,
    ):
        self.mapping = mapping
        self.invoke = invoke
        self.sqs = sqs_client
        self.region = region
        self.wait_time_s = max(0, min(LONG_POLL_SECONDS, int(wait_time_s)))
        self.error_backoff_s = error_backoff_s
        self._stop = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run ``mapping.concurrency`` consumers until ``shutdown()``; returns once they are done
        (the batch each is processing finishes; an idle long poll ends within ``wait_time_s``)."""
        if not self.mapping.enabled:
            logger.info("SQS mapping for %s is disabled", self.mapping.queue_arn)
            self._stop.wait()
            return
        consumers = [
            threading.Thread(target=self._consume, name=f"sqs-{self.mapping.event_name or 'poller'}-{index}", daemon=True)
            for index in range(self.mapping.concurrency)
        ]
        for consumer in consumers:
            consumer.start()
        self._stop.wait()
        for consumer in consumers:
            consumer.join()

    def shutdown(self) -> None:
        """Ask ``run()`` to return once the batches in flight are done. Idempotent; never blocks."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except (ClientError, BotoCoreError):
                # The emulator restarting or a throttle: Lambda's pollers back off and retry too.
                logger.exception("polling %s failed; retrying", self.mapping.queue_url)
                self._stop.wait(self.error_backoff_s)
            except Exception:  # noqa: BLE001 - a bug here must not silently end this consumer
                logger.exception("SQS poller for %s failed; retrying", self.mapping.queue_url)
                self._stop.wait(self.error_backoff_s)

    # -- one cycle ----------------------------------------------------------------------------

    def poll_once(self) -> BatchResult:
        """Receive one batch (long polling), invoke the function with it, delete what succeeded."""
        messages = self._receive_batch()
        result = BatchResult(received=len(messages))
        if not messages:
            return result
        if self._stop.is_set():
            # Received after shutdown was asked: not in flight yet, so hand it back at once rather
            # than leave it invisible for the queue's whole visibility timeout.
            self._release(messages)
            result.released = [m["MessageId"] for m in messages]
            return result

        records = [to_lambda_record(m, self.mapping.queue_arn, self.region) for m in messages]
        kept = [r for r in records if matches_any(self.mapping.filters, _filterable(r))]
        dropped = [r for r in records if r not in kept]
        if dropped:
            # Lambda deletes SQS messages that match no filter: they count as processed.
            self._delete(dropped)
            result.filtered = [r["messageId"] for r in dropped]
        if not kept:
            return result

        result.invoked = len(kept)
        failed_ids, error = self._deliver(kept)
        result.function_error = error
        succeeded = [r for r in kept if r["messageId"] not in failed_ids]
        self._delete(succeeded)
        result.deleted = [r["messageId"] for r in succeeded]
        result.failed = [r["messageId"] for r in kept if r["messageId"] in failed_ids]
        if result.failed:
            logger.info(
                "%d of %d message(s) from %s failed; they return after the visibility timeout",
                len(result.failed), len(kept), self.mapping.queue_arn,
            )
        return result

    def _receive_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 0
        window_ends: float | None = None
        while len(batch) < self.mapping.batch_size and not self._stop.is_set():
            if window_ends is None:
                wait = self.wait_time_s
            else:
                left = window_ends - time.monotonic()
                if left <= 0:
                    break
                wait = min(self.wait_time_s, max(1, math.ceil(left)))
            got = self.sqs.receive_message(
                QueueUrl=self.mapping.queue_url,
                MaxNumberOfMessages=min(MAX_RECEIVE, self.mapping.batch_size - len(batch)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            for index, message in enumerate(got):
                body_size = len(message["Body"].encode())
                if batch and size + body_size > MAX_PAYLOAD_BYTES:
                    self._release(got[index:])
                    return batch
                batch.append(message)
                size += body_size
            if window_ends is None:
                if not got:
                    return batch  # idle: nothing arrived during the long poll
                if self.mapping.maximum_batching_window_s <= 0:
                    break  # no window: invoke with what the first receive returned
                window_ends = time.monotonic() + self.mapping.maximum_batching_window_s
        return batch

    def _deliver(self, records: list[dict[str, Any]]) -> tuple[set[str], str | None]:
        """Invoke the function. Returns (message ids that failed, why the whole batch failed)."""
        every = {r["messageId"] for r in records}
        try:
            response = self.invoke({"Records": records})
        except Exception as exc:  # noqa: BLE001 - any function error fails the batch, as in Lambda
            logger.error("function failed on %d message(s) from %s: %s", len(records), self.mapping.queue_arn, exc)
            return every, f"{type(exc).__name__}: {exc}"
        if not self.mapping.report_batch_item_failures:
            return set(), None  # Lambda ignores a partial response unless the mapping opts in
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return set(), None
        failed: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in every:
                logger.error("invalid batchItemFailures entry %r: the whole batch failed", failure)
                return every, f"invalid batchItemFailures entry {failure!r}"
            failed.add(identifier)
        return failed, None

    def _delete(self, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), MAX_RECEIVE):
            chunk = records[start : start + MAX_RECEIVE]
            out = self.sqs.delete_message_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)],
            )
            for failure in out.get("Failed", []):
                logger.warning("could not delete message %s: %s", chunk[int(failure["Id"])]["messageId"], failure)

    def _release(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), MAX_RECEIVE):
            chunk = messages[start : start + MAX_RECEIVE]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )


# --------------------------------------------------------------------------------------------
# Event shape
# --------------------------------------------------------------------------------------------


def to_lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A ReceiveMessage message (as boto3 parsed it) -> the record Lambda puts in ``event["Records"]``.

    Lambda's record renames the API's fields to camelCase and spells message attributes with
    list fields (``stringListValues``, ``binaryListValues``) and base64 binary values:
    https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html#example-standard-queue-message-event
    """
    system = message.get("Attributes") or {}
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {name: str(system[name]) for name in RECORD_ATTRIBUTES if name in system},
        "messageAttributes": {
            name: _message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update({"md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
                   "awsRegion": region})
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = _b64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues") or [])
    attribute["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues") or []]
    attribute["dataType"] = value["DataType"]
    return attribute


def _b64(value: Any) -> str:
    return base64.b64encode(value if isinstance(value, (bytes, bytearray)) else str(value).encode()).decode()


def _filterable(record: dict[str, Any]) -> dict[str, Any]:
    """What FilterCriteria see: the record, with a JSON body parsed (Lambda filters on its fields)."""
    try:
        body = json.loads(record["body"])
    except ValueError:
        return record
    return {**record, "body": body}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
