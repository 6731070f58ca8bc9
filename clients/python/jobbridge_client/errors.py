"""What the client raises. Every error is a ``JobBridgeError``.

An HTTP error answer is a ``ProblemError`` carrying the RFC 9457 problem fields the API sends
(``type``, ``title``, ``status``, ``detail``, ``errors`` naming each field and reason,
``correlation_id``); its subclasses say what kind of refusal it was. A job that ends badly while
the caller waits is a ``JobFailed`` (with the job's error) or a ``JobCancelled``.
"""

from __future__ import annotations

from typing import Any

import httpx

from .models import Job, JobError


class JobBridgeError(Exception):
    """Base of every error the client raises."""


class ProblemError(JobBridgeError):
    """The API refused the request: the problem+json fields of its answer."""

    def __init__(self, status: int, *, type: str = "about:blank", title: str = "", detail: str = "",
                 errors: list[dict[str, Any]] | None = None, correlation_id: str | None = None,
                 body: Any = None) -> None:
        self.status = status
        self.type = type
        self.title = title or f"HTTP {status}"
        self.detail = detail
        self.errors = errors or []
        self.correlation_id = correlation_id
        self.body = body
        super().__init__(f"{status} {self.title}: {detail}" if detail else f"{status} {self.title}")

    @property
    def slug(self) -> str:
        """The last part of ``type`` (``not-found``, ``invalid-params``, ``job-final``, ...)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]


class InvalidRequest(ProblemError):
    """400, 413 or 422: the request itself is wrong; ``errors`` names the fields."""


class AuthError(ProblemError):
    """401 or 403: no token, a bad one, or one the API does not accept for this."""


class NotFound(ProblemError):
    """404: no such job for this caller."""


class Conflict(ProblemError):
    """409: the job is already final, or an Idempotency-Key was reused with another body."""


class RateLimited(ProblemError):
    """429, still after every retry."""


class ServerError(ProblemError):
    """5xx, still after every retry."""


class ConnectionFailed(JobBridgeError):
    """The API could not be reached (connection refused, reset, timed out), after every retry."""


class JobFailed(JobBridgeError):
    """The job ended FAILED; ``error`` is its error (type, message, retryable)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.error: JobError = job.error or JobError(type="Unknown", message="the job failed without an error")
        super().__init__(f"job {job.job_id} failed: {self.error.type}: {self.error.message}")


class JobCancelled(JobBridgeError):
    """The job ended CANCELLED."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.job_id} was cancelled")


class WaitTimeout(JobBridgeError):
    """The job was still not final when the wait's time ran out; ``job`` is how it was last seen."""

    def __init__(self, job: Job, timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        super().__init__(f"job {job.job_id} still {job.state.value} after {timeout:g}s")


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: InvalidRequest, 413: InvalidRequest, 422: InvalidRequest, 401: AuthError, 403: AuthError,
    404: NotFound, 409: Conflict, 429: RateLimited,
}


def problem_of(status: int, fields: dict[str, Any], *, body: Any = None, reason: str = "",
               correlation_id: str | None = None) -> ProblemError:
    """The error of a problem document (an answer's, or one item's of a bulk submit)."""
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    detail = fields.get("detail") or fields.get("message") or (body if isinstance(body, str) else "")
    errors = fields.get("errors")
    return kind(
        status,
        type=str(fields.get("type") or "about:blank"),
        title=str(fields.get("title") or reason),
        detail=str(detail)[:2000],
        errors=errors if isinstance(errors, list) else [],
        correlation_id=fields.get("correlation_id") or correlation_id,
        body=fields if body is None else body,
    )


def problem_error(response: httpx.Response) -> ProblemError:
    """The error of an HTTP error answer: its problem+json fields, or what can be said without them
    (API Gateway's own 401/403/429 bodies are not problem documents)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    fields = body if isinstance(body, dict) else {}
    return problem_of(response.status_code, fields, body=body, reason=response.reason_phrase or "",
                      correlation_id=response.headers.get("x-correlation-id"))
