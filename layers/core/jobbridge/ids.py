"""Job ids and clocks.

A job id is ``job_`` + a ULID (48-bit millisecond time, 80 random bits, Crockford base32): unique
without coordination and sortable by creation time. An idempotent submit derives its id from the
tenant and key instead, so that the single conditional PutItem itself detects the replay.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime, timezone

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
PREFIX = "job_"


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_job_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    return PREFIX + _b32(ms, 10) + _b32(rand, 16)


def idempotent_job_id(tenant: str, key: str) -> str:
    """The id of the job a (tenant, Idempotency-Key) pair names; the same pair, the same id."""
    digest = hashlib.sha256(f"{tenant}\x00{key}".encode()).digest()
    return PREFIX + "k" + _b32(int.from_bytes(digest[:16], "big"), 25)


# A tenant (the token's claim, or the app's own name for itself in-process) and an Idempotency-Key:
# what the API and JobSubmitter accept alike.
TENANT_RE = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")  # whole value: fullmatch (a "$" lets a trailing newline in)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces; the whole value


def is_tenant(value: object) -> bool:
    return isinstance(value, str) and TENANT_RE.fullmatch(value) is not None


def is_idempotency_key(value: str) -> bool:
    return IDEMPOTENCY_KEY_RE.fullmatch(value) is not None


def is_job_id(value: str) -> bool:
    return (
        len(value) == len(PREFIX) + 26
        and value.startswith(PREFIX)
        and all(ch in _CROCKFORD for ch in value[len(PREFIX):])
    )


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z: sorts lexically in time order."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
