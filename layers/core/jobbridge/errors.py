"""Domain errors. The store maps DynamoDB conditions to these; the API maps these to HTTP once."""

from __future__ import annotations

from typing import Any


class JobBridgeError(Exception):
    """Base of every domain error."""


class JobNotFound(JobBridgeError):
    """No such job for this caller (another tenant's job is reported the same way)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class InvalidTransition(JobBridgeError):
    """A conditional write failed: the job is not in a state that allows the change."""

    def __init__(self, job_id: str, action: str, state: str | None, detail: str = "") -> None:
        msg = f"cannot {action} job {job_id} in state {state}"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.job_id = job_id
        self.action = action
        self.state = state
        self.current: dict[str, Any] | None = None  # the record as the failed write found it, when known


class JobAlreadyFinal(InvalidTransition):
    """The job reached SUCCEEDED, FAILED or CANCELLED; those states are absorbing."""


class StaleAttempt(InvalidTransition):
    """A worker wrote for an attempt that is no longer the job's current one (fenced out)."""


class RouteMismatch(InvalidTransition):
    """The job is not of the route this caller serves (a public worker and a private job): the
    write's condition on ``route`` refused it. A security event, not a race: logged and counted."""

    def __init__(self, job_id: str, action: str, state: str | None, route: str, job_route: str | None) -> None:
        super().__init__(job_id, action, state, f"the job's route is {job_route}; this worker serves {route}")
        self.route = route
        self.job_route = job_route


class IdempotencyConflict(JobBridgeError):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for job {job_id} with a different request body"
        )
        self.key = key
        self.job_id = job_id


class UnknownJobType(JobBridgeError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown job type {name!r}; known types: {', '.join(known)}")
        self.name = name
        self.known = known


class InvalidParams(JobBridgeError):
    """Params do not validate against the job type's model; errors carry field paths."""

    def __init__(self, job_type: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"params are invalid for job type {job_type!r}")
        self.job_type = job_type
        self.errors = errors


class InvalidRequest(JobBridgeError):
    """A submit made in process (``JobSubmitter``) is not a valid request: what the API answers 422
    for. ``errors`` carry field paths, as the API's problem does."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        super().__init__(f"invalid request: {fields}")
        self.errors = errors


class PlacementNotAllowed(JobBridgeError):
    """The request asks for a placement the job type or the data classification forbids."""

    def __init__(self, reason: str, field: str = "target") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class InvalidCursor(JobBridgeError):
    def __init__(self) -> None:
        super().__init__("cursor is not valid for this listing")


class TooLarge(JobBridgeError):
    """A part of the job record over its share of DynamoDB's item size (jobbridge.limits)."""

    def __init__(self, field: str, size: int | None, limit: int, detail: str = "") -> None:
        what = f"{field} takes {size} bytes as stored (UTF-8 JSON)" if size is not None else f"{field} is too large"
        super().__init__(detail or f"{what}; the limit is {limit} bytes")
        self.field = field
        self.size = size
        self.limit = limit


class ItemTooLarge(TooLarge):
    """DynamoDB refused a write because the item would exceed its 400 KB limit (its
    ValidationException "Item size has exceeded ..." / "Item size to update has exceeded ...").
    Nothing was written: DynamoDB refuses the whole write."""

    def __init__(self, job_id: str, limit: int) -> None:
        super().__init__("record", None, limit,
                         f"job {job_id}: DynamoDB refused the write, the record would exceed its {limit} bytes")
        self.job_id = job_id


class DependencyUnavailable(JobBridgeError):
    """An AWS dependency could not be reached (throttled past retries, 5xx, network)."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail


# --- raised by job functions (the job author's vocabulary) -----------------------------------


class JobFailure(Exception):
    """Raise from a job function to fail the attempt. ``retryable`` decides retry vs FAILED."""

    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class RetryableError(JobFailure):
    retryable = True


class PermanentError(JobFailure):
    retryable = False


class JobCancelled(Exception):
    """Raised inside a job function (by ``ctx.raise_if_cancelled()``) to stop cooperatively."""


class WorkerShutdown(Exception):
    """The worker stopped the attempt on its way down (not the job's fault): the job is handed back
    without spending a run (JobLifecycle.release) and another worker takes it at once."""
