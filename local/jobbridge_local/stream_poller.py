"""Emulate Lambda's DynamoDB stream event source mapping: poll a table's stream, invoke a function.

What Lambda does, and so what this does (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html):

- reads each shard in order (DescribeStream -> GetShardIterator -> GetRecords), a new shard from
  ``StartingPosition`` (TRIM_HORIZON: the oldest record), and invokes the function with up to
  ``BatchSize`` records in the event shape Lambda uses (``{"Records": [...]}``, eventVersion 1.1);
- drops records that match none of ``FilterCriteria`` before invoking (they count as processed);
- with ``ReportBatchItemFailures``, a response ``{"batchItemFailures": [{"itemIdentifier": seq}]}``
  moves the checkpoint to the lowest reported sequence number and the next read starts there;
  an empty or null list is success; a missing, empty or unknown itemIdentifier fails the whole
  batch (https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html);
- an exception fails the whole batch; with ``BisectBatchOnFunctionError`` the batch is split in
  two and retried (a split is not counted as a retry);
- after ``MaximumRetryAttempts`` retries (-1: forever) the failed batch's *pointer* (shard and
  sequence numbers, not the records) goes to ``DestinationConfig.OnFailure`` (an SQS queue) and
  the shard moves on.

Not emulated: MaximumBatchingWindowInSeconds (records are delivered as soon as read),
MaximumRecordAgeInSeconds, ParallelizationFactor, tumbling windows, shard lineage ordering
(moto has one shard per table: moto/dynamodbstreams/models.py).

The poller is a library class with a lifecycle: ``run()`` blocks until ``shutdown()``, which only
sets a flag; the batch in flight finishes first. Signals belong to the CLI.

Example::

    poller = StreamPoller(mapping, invoke=lambda event: handler(event, context), streams_client=streams)
    threading.Thread(target=poller.run).start()
    ...
    poller.shutdown()
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from botocore.exceptions import ClientError

from .event_filter import matches_any, parse_filters
from .template import EventSource

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100  # Lambda's default for DynamoDB streams
IDLE_SLEEP_SECONDS = 0.2
Invoke = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class StreamMapping:
    """The settings of one DynamoDB event source mapping that the poller honours."""

    stream_arn: str
    batch_size: int = DEFAULT_BATCH_SIZE
    starting_position: str = "TRIM_HORIZON"
    report_batch_item_failures: bool = False
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1
    on_failure_destination: str | None = None  # an SQS queue ARN
    filters: list[dict[str, Any]] = field(default_factory=list)  # parsed FilterCriteria patterns
    function_arn: str = ""
    enabled: bool = True

    @classmethod
    def from_event_source(cls, source: EventSource, function_arn: str = "") -> "StreamMapping":
        """From a SAM ``Type: DynamoDB`` event whose properties are resolved.

        https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-dynamodb.html
        """
        props = source.properties
        destination = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if destination and ":sqs:" not in destination:
            raise ValueError(f"{source.name}: only SQS on-failure destinations are emulated, got {destination}")
        return cls(
            stream_arn=props["Stream"],
            batch_size=int(props.get("BatchSize", DEFAULT_BATCH_SIZE)),
            starting_position=props.get("StartingPosition", "TRIM_HORIZON"),
            report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
            bisect_batch_on_function_error=_truthy(props.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
            on_failure_destination=destination,
            filters=parse_filters((props.get("FilterCriteria") or {}).get("Filters")),
            function_arn=function_arn,
            enabled=_truthy(props.get("Enabled", True)),
        )


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None = None
    checkpoint: str | None = None  # last sequence number fully processed
    retry_from: str | None = None  # re-deliver from here on the next read
    failures: int = 0  # failed invocations of the batch starting at the checkpoint
    # Sizes of the next batches while bisecting a failed one: [a p c d] failing becomes [2, 2];
    # then [a p] failing becomes [1, 1, 2]. Empty: read up to BatchSize.
    bisected: list[int] = field(default_factory=list)
    closed: bool = False


class StreamPoller:
    """Polls one stream for one function. ``poll_once()`` is one cycle, for tests."""

    def __init__(
        self,
        mapping: StreamMapping,
        invoke: Invoke,
        streams_client: Any,
        sqs_client: Any = None,
        region: str = "us-east-1",
        idle_sleep: float = IDLE_SLEEP_SECONDS,
    ):
        if mapping.on_failure_destination and sqs_client is None:
            raise ValueError("an on-failure destination needs an sqs_client")
        self.mapping = mapping
        self.invoke = invoke
        self.streams = streams_client
        self.sqs = sqs_client
        self.region = region
        self.idle_sleep = idle_sleep
        self._shards: dict[str, _Shard] = {}
        self._stop = threading.Event()
        self._first_describe = True
        self._advanced = False  # did the last cycle move a checkpoint?

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Poll until ``shutdown()``; sleep ``idle_sleep`` after a cycle that moved no checkpoint
        (nothing new, or a failed batch: retries are paced, not a hot loop)."""
        if not self.mapping.enabled:
            logger.info("stream mapping for %s is disabled", self.mapping.stream_arn)
            self._stop.wait()
            return
        while not self._stop.is_set():
            try:
                self.poll_once()
            except ClientError:
                # The emulator restarting or a throttle: Lambda's poller backs off and retries too.
                logger.exception("polling %s failed; retrying", self.mapping.stream_arn)
                self._advanced = False
            if not self._advanced:
                self._stop.wait(self.idle_sleep)

    def shutdown(self) -> None:
        """Ask ``run()`` to return after the batch in flight. Idempotent; never blocks."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- one cycle ----------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Read each open shard once and invoke the function for what was read.

        Returns the number of records handed to the function (0 when idle).
        """
        self._advanced = False
        self._refresh_shards()
        delivered = 0
        for shard in list(self._shards.values()):
            if not shard.closed and not self._stop.is_set():
                delivered += self._poll_shard(shard)
        return delivered

    def _refresh_shards(self) -> None:
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.mapping.stream_arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                if shard_id not in self._shards:
                    self._shards[shard_id] = _Shard(shard_id)
                    # Shards present when the mapping starts begin at StartingPosition; shards
                    # that appear later (splits) are read from their start, as Lambda does.
                    self._shards[shard_id].iterator = self._new_iterator(
                        shard_id, self.mapping.starting_position if self._first_describe else "TRIM_HORIZON"
                    )
            start = description.get("LastEvaluatedShardId")
            if not start:
                break
        self._first_describe = False

    def _new_iterator(self, shard_id: str, iterator_type: str, sequence_number: str | None = None) -> str:
        kwargs: dict[str, Any] = {
            "StreamArn": self.mapping.stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if sequence_number is not None:
            kwargs["SequenceNumber"] = sequence_number
        return self.streams.get_shard_iterator(**kwargs)["ShardIterator"]

    def _poll_shard(self, shard: _Shard) -> int:
        if shard.retry_from is not None:
            shard.iterator = self._new_iterator(shard.shard_id, "AT_SEQUENCE_NUMBER", shard.retry_from)
            shard.retry_from = None
        elif shard.iterator is None:
            if shard.checkpoint is None:
                shard.iterator = self._new_iterator(shard.shard_id, "TRIM_HORIZON")
            else:
                shard.iterator = self._new_iterator(shard.shard_id, "AFTER_SEQUENCE_NUMBER", shard.checkpoint)
        try:
            limit = shard.bisected[0] if shard.bisected else self.mapping.batch_size
            response = self.streams.get_records(ShardIterator=shard.iterator, Limit=limit)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ExpiredIteratorException":
                shard.iterator = None  # iterators live 15 minutes; re-open from the checkpoint
                return 0
            raise
        records = response.get("Records", [])
        next_iterator = response.get("NextShardIterator")
        if not records:
            shard.iterator = next_iterator
            shard.closed = next_iterator is None  # a closed shard has no next iterator
            return 0

        batch = [to_lambda_record(r, self.mapping.stream_arn, self.region) for r in records]
        batch = [r for r in batch if matches_any(self.mapping.filters, r)]
        last_read = records[-1]["dynamodb"]["SequenceNumber"]
        if not batch:
            self._advance(shard, last_read, next_iterator)
            return 0

        failed_at, whole_batch_error = self._deliver(batch)
        if failed_at is None:
            self._advance(shard, last_read, next_iterator)
            return len(batch)

        if whole_batch_error and self.mapping.bisect_batch_on_function_error and len(records) > 1:
            first_half = (len(records) + 1) // 2
            shard.bisected[:1] = [first_half, len(records) - first_half]
            shard.retry_from = records[0]["dynamodb"]["SequenceNumber"]
            return len(batch)

        shard.failures += 1
        retries_left = self.mapping.maximum_retry_attempts < 0 or shard.failures <= self.mapping.maximum_retry_attempts
        if retries_left:
            shard.retry_from = failed_at
            return len(batch)

        failed = [r for r in batch if int(r["dynamodb"]["SequenceNumber"]) >= int(failed_at)]
        self._send_to_failure_destination(shard, failed, whole_batch_error)
        self._advance(shard, last_read, next_iterator)
        return len(batch)

    def _advance(self, shard: _Shard, sequence_number: str, next_iterator: str | None) -> None:
        self._advanced = True
        shard.checkpoint = sequence_number
        shard.iterator = next_iterator
        shard.closed = next_iterator is None
        shard.failures = 0
        if shard.bisected:
            shard.bisected.pop(0)

    def _deliver(self, batch: list[dict[str, Any]]) -> tuple[str | None, bool]:
        """Invoke the function. Returns (first failed sequence number or None, whole-batch error)."""
        first = batch[0]["dynamodb"]["SequenceNumber"]
        try:
            response = self.invoke({"Records": batch})
        except Exception:  # noqa: BLE001 - any error in the function fails the batch, as in Lambda
            logger.exception("function failed on %d stream record(s) from %s", len(batch), first)
            return first, True
        if not self.mapping.report_batch_item_failures:
            return None, False  # Lambda ignores a partial response unless the mapping opts in
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return None, False
        sequence_numbers = {r["dynamodb"]["SequenceNumber"] for r in batch}
        reported: list[int] = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in sequence_numbers:
                logger.error("invalid batchItemFailures entry %r: the whole batch failed", failure)
                return first, True
            reported.append(int(identifier))
        return str(min(reported)), False

    def _send_to_failure_destination(self, shard: _Shard, failed: list[dict[str, Any]], error: bool) -> None:
        destination = self.mapping.on_failure_destination
        first, last = failed[0]["dynamodb"], failed[-1]["dynamodb"]
        logger.error(
            "retries exhausted for stream records %s..%s; %s",
            first["SequenceNumber"],
            last["SequenceNumber"],
            f"pointer sent to {destination}" if destination else "discarded (no on-failure destination)",
        )
        if not destination:
            return
        # The shape of Lambda's on-failure record for streams ("DDBStreamBatchInfo"):
        # https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.mapping.function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": shard.failures,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                **({"functionError": "Unhandled"} if error else {}),
            },
            "version": "1.0",
            "timestamp": _iso(datetime.now(timezone.utc)),
            "DDBStreamBatchInfo": {
                "shardId": shard.shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(_from_epoch(first.get("ApproximateCreationDateTime"))),
                "approximateArrivalOfLastRecord": _iso(_from_epoch(last.get("ApproximateCreationDateTime"))),
                "batchSize": len(failed),
                "streamArn": self.mapping.stream_arn,
            },
        }
        queue_name = destination.rsplit(":", 1)[-1]
        account = destination.split(":")[4]
        url = self.sqs.get_queue_url(QueueName=queue_name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody=_json(record))


# --------------------------------------------------------------------------------------------
# Event shape
# --------------------------------------------------------------------------------------------


def to_lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A GetRecords record (as boto3 parsed it) -> the record Lambda puts in ``event["Records"]``.

    boto3 turns ``ApproximateCreationDateTime`` into a datetime and binary attribute values into
    bytes; Lambda's JSON event has epoch seconds and base64 strings.
    """
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        # Streams round it down to the second (StreamRecord API reference).
        dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
    for key in ("Keys", "NewImage", "OldImage"):
        if key in dynamodb:
            dynamodb[key] = _json_safe(dynamodb[key])
    event_record = {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion") or region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # present on TTL deletions
        event_record["userIdentity"] = record["userIdentity"]
    return event_record


def _json_safe(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _from_epoch(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value or 0), tz=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
