"""The consumer side of SQS: receive, delete, change visibility, and send a fresh copy of a
message a consumer hands back. With dispatch.Dispatcher (the sender) the only code that calls SQS."""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .errors import DependencyUnavailable
from .messages import JobMessage

log = logging.getLogger(__name__)

SQS_MAX_VISIBILITY_S = 43_200  # 12 hours
SQS_MAX_DELAY_S = 900
# A failed record comes back after seconds, growing with each return: 1-2 s, 2-4 s, ... up to 60 s,
# where the queue's visibility timeout (900 s on public-batch, 5400 s on public-lambda) would
# have kept it out of sight after a single read timeout.
RETURN_BASE_S = 2.0
RETURN_CAP_S = 60.0


def return_delay_s(returns: int, *, cap_s: float = RETURN_CAP_S, rng: Callable[[], float] = random.random) -> int:
    """The wait before the ``returns``-th return (1 = the first): equal jitter, between half of
    min(cap, base * 2**(returns-1)) and all of it, in whole seconds and at least one. Half is
    fixed so that a failed record never comes straight back; the other half spreads a batch that
    failed together (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/)."""
    ceiling = min(cap_s, RETURN_BASE_S * 2 ** min(max(0, returns - 1), 30))
    return max(1, min(int(cap_s), math.ceil(ceiling / 2 + rng() * ceiling / 2)))


class Queue:
    def __init__(self, url: str, *, client: Any = None, profile: str = "default") -> None:
        self.url = url
        self._client = client
        self._profile = profile

    @classmethod
    def of_arn(cls, arn: str, *, client: Any = None) -> "Queue":
        """The queue an SQS event source ARN names (``arn:aws:sqs:region:account:name``), by its
        canonical URL (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-queue-message-identifiers.html)."""
        _, partition, _, region, account, name = arn.split(":", 5)
        suffix = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
        return cls(f"https://sqs.{region}.{suffix}/{account}/{name}", client=client)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("sqs", self._profile)
        return self._client

    def receive(self, max_messages: int = 10, wait_s: int = 20, visibility_s: int | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max(1, min(10, max_messages)),
            "WaitTimeSeconds": max(0, min(20, wait_s)),
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_s is not None:
            kwargs["VisibilityTimeout"] = visibility_s
        return self._call("receive_message", **kwargs).get("Messages", [])

    def delete(self, receipt_handle: str) -> None:
        self._call("delete_message", QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def delete_batch(self, receipt_handles: list[str]) -> list[str]:
        """Delete up to ten; returns the receipt handles that failed."""
        if not receipt_handles:
            return []
        out = self._call("delete_message_batch", QueueUrl=self.url,
                         Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)])
        return [receipt_handles[int(f["Id"])] for f in out.get("Failed", [])]

    def send(self, body: str, delay_s: int = 0) -> None:
        """Send ``body`` as a new message. A consumer that hands a message back re-sends it this way
        and acknowledges the old one: the copy starts at receive count 0, where making the old one
        visible again would spend one of its maxReceiveCount receives on a job that never ran."""
        self._call("send_message", QueueUrl=self.url, MessageBody=body, DelaySeconds=max(0, min(900, int(delay_s))))

    def send_again(self, message: JobMessage) -> int:
        """Send a fresh copy of a message a consumer could not handle because of an outage of ours
        (DynamoDB, Batch or the API unavailable), after a backoff that grows with the copy's
        ``returns``; the caller then acknowledges the old message. The copy starts at receive count
        0, so an outage spends none of the job's maxReceiveCount: a job that never ran is not
        dead-lettered for it (its queue-wait deadline bounds the wait). Returns the delay; raises
        DependencyUnavailable when SQS refuses the copy (the caller then returns the old one)."""
        again = message.model_copy(update={"returns": message.returns + 1})
        delay = return_delay_s(again.returns, cap_s=SQS_MAX_DELAY_S)
        self.send(again.model_dump_json(), delay_s=delay)
        return delay

    def return_soon(self, receipt_handle: str, receives: int) -> int | None:
        """Make a record this consumer failed visible again after a short backoff (growing with its
        receive count), instead of the queue's whole visibility timeout; then report it failed.
        Returns the delay, or None when SQS is out too (the record comes back when its visibility
        lapses)."""
        delay = return_delay_s(receives)
        try:
            self.change_visibility(receipt_handle, delay)
        except DependencyUnavailable as exc:
            log.warning("could not shorten a failed record's visibility", extra={"error": str(exc)})
            return None
        return delay

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._call("change_message_visibility", QueueUrl=self.url, ReceiptHandle=receipt_handle,
                   VisibilityTimeout=max(0, min(SQS_MAX_VISIBILITY_S, int(seconds))))

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise DependencyUnavailable("sqs", f"{operation}: {code}") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable("sqs", f"{operation}: {type(exc).__name__}") from exc
