"""The job record's size budget: ours to keep, so that DynamoDB never has to refuse a write.

A job is one DynamoDB item, and DynamoDB refuses an item over 400 KB (409,600 bytes), counted as
its attribute names plus values in UTF-8 (``dynamo_codec.item_size``):
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items
The record grows after the submit (a result, an error, history, leases), so each part has a
share, fixed in advance, and the shares add up to less than the limit
(tests/unit/test_limits.py builds the worst case and measures it):

    part        share                                   enforced
    params      PARAMS_MAX_BYTES (160 KiB of JSON text) at submit: 413 naming ``params``
    result      RESULT_MAX_BYTES (160 KiB of JSON text) at completion: FAILED, ResultTooLarge
    history     the first entry + the newest HISTORY_KEEP_NEWEST, details cut to HISTORY_DETAIL_MAX_CHARS
    error       message cut to ERROR_MESSAGE_MAX_CHARS, type to ERROR_TYPE_MAX_CHARS
    the rest    ids, timestamps, lease, progress (1,024 characters), Batch bookkeeping: bounded by the models

Large payloads (a result or params in S3, referenced from the record) will lift the first two.
"""

from __future__ import annotations

from typing import Any

from .dynamo_codec import json_size
from .errors import TooLarge
from .models import JobError

DYNAMODB_MAX_ITEM_BYTES = 400 * 1024
PARAMS_MAX_BYTES = 160 * 1024
RESULT_MAX_BYTES = 160 * 1024
HISTORY_KEEP_NEWEST = 40  # with the first entry (the submit): 41 entries at most
HISTORY_DETAIL_MAX_CHARS = 200
ERROR_MESSAGE_MAX_CHARS = 2000
ERROR_TYPE_MAX_CHARS = 128


def check_params(params: Any) -> None:
    """Raise TooLarge when the params, stored as JSON text, take more than their share."""
    size = json_size(params)
    if size > PARAMS_MAX_BYTES:
        raise TooLarge("params", size, PARAMS_MAX_BYTES)


def check_result(result: Any) -> None:
    """Raise TooLarge when the result, stored as JSON text, takes more than its share (TypeError
    or ValueError when it is not JSON at all)."""
    size = json_size(result)
    if size > RESULT_MAX_BYTES:
        raise TooLarge("result", size, RESULT_MAX_BYTES)


def bounded_error(error: JobError) -> JobError:
    """The error as it is stored: its message and type cut to their share (a job's exception text
    is the job author's, and may be any length)."""
    if len(error.message) <= ERROR_MESSAGE_MAX_CHARS and len(error.type) <= ERROR_TYPE_MAX_CHARS:
        return error
    message = error.message
    if len(message) > ERROR_MESSAGE_MAX_CHARS:
        message = message[:ERROR_MESSAGE_MAX_CHARS - 15] + " ...(truncated)"
    return error.model_copy(update={"message": message, "type": error.type[:ERROR_TYPE_MAX_CHARS]})


def history_detail(detail: str | None) -> str | None:
    return detail[:HISTORY_DETAIL_MAX_CHARS] if detail else detail
