"""The jobs as the API shows them, typed: plain dataclasses (the client needs nothing but httpx).

Fields the server adds later are kept in ``raw`` and ignored otherwise, so an older client keeps
working against a newer server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class State(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str = ""

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Progress | None:
        if data is None:
            return None
        return cls(fraction=float(data.get("fraction", 0.0)), message=str(data.get("message", "")))


@dataclass(frozen=True)
class JobError:
    type: str
    message: str
    retryable: bool = False
    attempt: int | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> JobError | None:
        if data is None:
            return None
        return cls(type=str(data.get("type", "")), message=str(data.get("message", "")),
                   retryable=bool(data.get("retryable", False)), attempt=data.get("attempt"))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)} - {"raw"}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Job:
    """A job as ``GET /jobs/{id}`` shows it."""

    job_id: str
    type: str
    state: State
    route: str
    created_at: str
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    attempt: int = 0
    max_attempts: int = 0
    cancel_requested: bool = False
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    dispatched_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Job:
        known = _known(cls, data)
        known["state"] = State(data["state"])
        known["progress"] = Progress.of(data.get("progress"))
        known["error"] = JobError.of(data.get("error"))
        return cls(**known, raw=data)


@dataclass(frozen=True)
class JobSummary:
    """A job as ``GET /jobs`` lists it."""

    job_id: str
    type: str
    state: State
    route: str
    created_at: str
    attempt: int = 0
    progress: Progress | None = None
    finished_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, data: dict[str, Any]) -> JobSummary:
        known = _known(cls, data)
        known["state"] = State(data["state"])
        known["progress"] = Progress.of(data.get("progress"))
        return cls(**known, raw=data)


@dataclass(frozen=True)
class Accepted:
    """The answer to a submit: the job's id and where it runs. ``replayed``: the Idempotency-Key
    had already made this job, and no second one was made. ``job``: set when a hot job type ran in
    the request (the API answered 200): it is already final."""

    job_id: str
    state: State
    route: str
    created_at: str
    location: str
    idempotency_key: str
    replayed: bool = False
    job: Job | None = None  # a hot job type ran in the request (200): the job as it ended, result included


@dataclass(frozen=True)
class Page:
    items: list[JobSummary]
    next_cursor: str | None = None
