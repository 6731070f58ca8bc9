"""The one loader of ``events/*.json`` for every test tier, and factories that start from those files.

The files are real-shaped payloads (API Gateway HTTP API payload format 2.0, a DynamoDB stream
batch, SQS batches and an EventBridge scheduled event), shared with ``sam local invoke``. Tests never write event JSON inline: they load a file
and change what the case is about.

    load_event("api_submit_job")                                  # as stored
    load_event("api_get_job.json", rawQueryString="a=1")          # top-level keys replaced
    api_event("POST", "/jobs", body={"type": "echo"}, tenant="globex")
    with_job_id(load_event("api_get_job"), job_id)                # fill the placeholder id
    sqs_event(sqs_record({"job_id": ...}, receipt_handle=handle))  # a worker batch
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"

# The id the api_get_job / api_cancel_job events carry until a test substitutes a real one.
JOB_ID_PLACEHOLDER = "job_00000000000000000000000000"

_NO_TENANT = object()
_cache: dict[str, dict[str, Any]] = {}


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of ``events/NAME.json`` (``.json`` optional), top-level keys replaced by ``overrides``."""
    stem = name[:-5] if name.endswith(".json") else name
    if stem not in _cache:
        path = EVENTS_DIR / f"{stem}.json"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in EVENTS_DIR.glob("*.json")))
            raise FileNotFoundError(f"no event {stem!r} in {EVENTS_DIR} (known: {known})")
        _cache[stem] = json.loads(path.read_text(encoding="utf-8"))
    event = copy.deepcopy(_cache[stem])
    event.update(copy.deepcopy(overrides))
    return event


def event_names(prefix: str = "") -> list[str]:
    """The stems of the stored events, e.g. ``event_names("api_")``."""
    return sorted(p.stem for p in EVENTS_DIR.glob(f"{prefix}*.json"))


def with_job_id(event: dict[str, Any], job_id: str) -> dict[str, Any]:
    """A copy of ``event`` with the placeholder job id replaced everywhere (path, proxy, http.path)."""
    text = json.dumps(event).replace(JOB_ID_PLACEHOLDER, job_id)
    return json.loads(text)


def api_event(
    method: str,
    path: str,
    body: Any = None,
    tenant: Any = "acme",
    headers: dict[str, str | None] | None = None,
    query: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event built from ``events/api_submit_job.json``.

    ``body``: a dict/list is sent as JSON, a str or bytes as is, None sends no body.
    ``tenant``: the authorizer's tenant claim; ``None`` removes the authorizer and the
    Authorization header (what a request that no authorizer vouched for looks like).
    ``headers``: merged in lower case; a value of None removes the header.
    ``query``: becomes rawQueryString and queryStringParameters.
    """
    event = load_event("api_submit_job")
    http = event["requestContext"]["http"]
    http["method"] = method.upper()
    http["path"] = path
    event["rawPath"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["requestContext"]["requestId"] = uuid.uuid4().hex
    hdrs = event["headers"]
    for name in ("content-type", "content-length"):
        hdrs.pop(name, None)
    event.pop("body", None)
    if body is not None:
        raw = body if isinstance(body, str) else body.decode() if isinstance(body, bytes) else json.dumps(body)
        event["body"] = raw
        hdrs["content-type"] = "application/json"
        hdrs["content-length"] = str(len(raw.encode()))
    if tenant is None:
        event["requestContext"].pop("authorizer", None)
        hdrs.pop("authorization", None)
    else:
        event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = tenant
    for name, value in (headers or {}).items():
        if value is None:
            hdrs.pop(name.lower(), None)
        else:
            hdrs[name.lower()] = value
    event.pop("queryStringParameters", None)
    event["rawQueryString"] = ""
    if query:
        event["rawQueryString"] = urlencode(query)
        event["queryStringParameters"] = {k: str(v) for k, v in query.items()}
    return event


def stream_event(*records: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB stream batch of ``records`` (``{"Records": [...]}``)."""
    return {"Records": [copy.deepcopy(r) for r in records]}


def stream_record(new_image: dict[str, Any], *, sequence_number: str, event_name: str = "INSERT",
                  old_image: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stream record shaped like the INSERT of ``events/bridge_stream_insert.json``, carrying
    ``new_image`` (a DynamoDB item as the table holds it)."""
    record = load_event("bridge_stream_insert")["Records"][0]
    record["eventID"] = uuid.uuid4().hex
    record["eventName"] = event_name
    stream = record["dynamodb"]
    stream["Keys"] = {"job_id": new_image["job_id"]}
    stream["NewImage"] = copy.deepcopy(new_image)
    stream["SequenceNumber"] = sequence_number
    stream["SizeBytes"] = len(json.dumps(new_image))
    if old_image is not None:
        stream["OldImage"] = copy.deepcopy(old_image)
    return record


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    """An SQS batch of ``records`` (``{"Records": [...]}``), as Lambda's event source mapping sends it."""
    return {"Records": [copy.deepcopy(r) for r in records]}


def sqs_record(body: str | dict[str, Any], *, receipt_handle: str, message_id: str | None = None,
               receive_count: int = 1, queue_arn: str | None = None) -> dict[str, Any]:
    """A record shaped like the first of ``events/sqs_worker_batch.json``, carrying ``body`` (a dict
    is sent as JSON, e.g. a job message) and the receipt handle of a message really in a queue."""
    record = load_event("sqs_worker_batch")["Records"][0]
    record["body"] = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    record["md5OfBody"] = hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324 - SQS's own digest
    record["messageId"] = message_id or str(uuid.uuid4())
    record["receiptHandle"] = receipt_handle
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    job_id = json.loads(record["body"]).get("job_id") if record["body"].startswith("{") else None
    if isinstance(job_id, str):
        record["messageAttributes"]["job_id"]["stringValue"] = job_id
        record["md5OfMessageAttributes"] = _md5_of_string_attributes(record["messageAttributes"])
    else:
        record["messageAttributes"] = {}
        record.pop("md5OfMessageAttributes", None)
    if queue_arn is not None:
        record["eventSourceARN"] = queue_arn
    return record


def _md5_of_string_attributes(attributes: dict[str, Any]) -> str:
    """SQS's MD5OfMessageAttributes for String attributes: per attribute, sorted by name, the
    length-prefixed name, data type, transport type 1 and value
    (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-metadata.html)."""
    def prefixed(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(4, "big") + raw

    data = b"".join(prefixed(name) + prefixed(a["dataType"]) + b"\x01" + prefixed(a["stringValue"])
                    for name, a in sorted(attributes.items()))
    return hashlib.md5(data).hexdigest()  # noqa: S324 - SQS's own digest
