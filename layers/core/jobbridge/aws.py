"""The one place boto3 clients are built: lazily, once per process, shared by threads.

boto3 clients are thread-safe; sessions are not, so each client is built under a lock from its
own session (https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html#multithreading-or-multiprocessing-with-clients).
Nothing is built at import time: a cold start pays only for the clients its first event uses.
The endpoint comes from the standard AWS_ENDPOINT_URL variable (moto server locally), so no
code path knows whether it is local.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}

# Standard retry mode: exponential backoff with jitter on throttling, 5xx and timeouts. In a
# `retries` config `max_attempts` counts retries, not the first try: 3 means 4 attempts in all.
# https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html#standard-retry-mode
# No client-side parameter validation: botocore would walk every attribute of every job record
# against the API model before each call, the largest single CPU cost of a warm submit after the
# serialization itself (make bench: 75 of 190 us per PutItem of a job record). The requests are
# built here, not by callers, and the service validates them anyway (a malformed one is its
# ValidationException instead of a ParamValidationError).
# https://botocore.amazonaws.com/v1/documentation/api/latest/reference/config.html
_PROFILES: dict[str, dict[str, Any]] = {
    "default": {"retries": {"mode": "standard", "max_attempts": 3}, "connect_timeout": 2, "read_timeout": 10,
                "parameter_validation": False},
    # SQS long polling holds a receive open for up to 20 s: the read timeout must outlast it.
    "long_poll": {"retries": {"mode": "standard", "max_attempts": 3}, "connect_timeout": 5, "read_timeout": 30,
                  "parameter_validation": False},
}


def client(service: str, profile: str = "default") -> Any:
    key = (service, profile)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            import boto3
            from botocore.config import Config

            found = boto3.session.Session().client(service, config=Config(**_PROFILES[profile]))
            _clients[key] = found
    return found


def reset_clients() -> None:
    """Forget built clients (tests that change the endpoint or credentials between cases)."""
    with _lock:
        _clients.clear()
