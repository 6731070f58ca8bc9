"""The consumer side of SQS: receive, delete, change visibility, and send a fresh copy of a
message a consumer hands back. With dispatch.Dispatcher (the sender) the only code that calls SQS."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .errors import DependencyUnavailable

SQS_MAX_VISIBILITY_S = 43_200  # 12 hours


class Queue:
    def __init__(self, url: str, *, client: Any = None, profile: str = "default") -> None:
        self.url = url
        self._client = client
        self._profile = profile

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
