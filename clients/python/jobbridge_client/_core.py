"""What the sync and the async client share: retries, auth, the requests' shapes and the answers'
parsing, and the polling schedule of ``wait``/``watch``. The two clients only add the I/O loop.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Iterable, Iterator, Union

import httpx

from .errors import JobCancelled, JobFailed, ProblemError, WaitTimeout, problem_of
from .models import Accepted, Job, JobSummary, Page, State

# Answers worth another try: throttled, or the server (or API Gateway before it) failed or timed out.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# A server that holds ``GET /jobs/{id}?wait=N`` until the job changes (a long poll) says so with this
# header on its answer; a server without long polls ignores the unknown query parameter and answers
# at once without it, and the client then polls with backoff instead (docs/CONTRACTS.md).
LONG_POLL_HEADER = "Jobbridge-Long-Poll"

Token = Union[str, Callable[[], str], Callable[[], Awaitable[str]], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (a random delay up to ``base * 2**n``, at most
    ``cap``), never sooner than the answer's ``Retry-After`` (itself at most ``max_retry_after``).
    ``attempts`` counts every try, the first included."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None, *, rng: random.Random | None = None) -> float | None:
        """Seconds to sleep before retry number ``retry`` (0 = the first retry); None when the
        tries are spent."""
        if retry + 1 >= self.attempts:
            return None
        jittered = (rng or random).uniform(0, min(self.cap, self.base * (2 ** retry)))
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), jittered)
        return jittered


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def new_idempotency_key() -> str:
    return f"jbc-{uuid.uuid4().hex}"


def submit_body(type: str, params: dict[str, Any] | None, *, target: str | None, priority: int | None,
                requirements: dict[str, Any] | None, data_classification: str | None) -> dict[str, Any]:
    """The body of ``POST /jobs``; what is not given is left to the server's defaults."""
    body: dict[str, Any] = {"type": type, "params": params or {}}
    for name, value in (("target", target), ("priority", priority), ("requirements", requirements),
                        ("data_classification", data_classification)):
        if value is not None:
            body[name] = value
    return body


def accepted_of(response: httpx.Response, idempotency_key: str) -> Accepted:
    """202: the job is queued. 200: a hot job type ran in the request; the body is the final job."""
    data = response.json()
    return Accepted(job_id=data["job_id"], state=State(data["state"]), route=data["route"],
                    created_at=data["created_at"], location=response.headers.get("location", f"/jobs/{data['job_id']}"),
                    idempotency_key=idempotency_key,
                    replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
                    job=Job.of(data) if response.status_code == 200 else None)


def page_of(response: httpx.Response) -> Page:
    data = response.json()
    return Page(items=[JobSummary.of(item) for item in data.get("items", [])], next_cursor=data.get("next_cursor"))


def list_params(state: State | str | None, type: str | None, page_size: int, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": page_size}
    if state is not None:
        params["state"] = State(state).value
    if type is not None:
        params["type"] = type
    if cursor is not None:
        params["cursor"] = cursor
    return params


def final_outcome(job: Job) -> Job:
    """``job`` if it succeeded; JobFailed or JobCancelled otherwise (call on a final job)."""
    if job.state is State.FAILED:
        raise JobFailed(job)
    if job.state is State.CANCELLED:
        raise JobCancelled(job)
    return job


class LongPollSupport:
    """Whether the server holds ``?wait=N``: unknown until the first answer says, then remembered."""

    def __init__(self) -> None:
        self.supported: bool | None = None

    def learn(self, response: httpx.Response) -> None:
        self.supported = LONG_POLL_HEADER.lower() in response.headers


class Watch:
    """The state of one ``watch``: its deadline, what the watcher last saw, and the pauses between
    polls when the server has no long poll (short after a change, growing by half each quiet poll
    up to ``maximum``). The clients' loops only do the I/O::

        job = get(); watch.saw(job); yield job
        while not job.state.is_final:
            sleep(watch.pause())              # 0 while the server long-polls
            job = get(params=watch.params())  # then watch.learn(response)
            if watch.saw(job): yield job
    """

    def __init__(self, long_poll: LongPollSupport, poll: tuple[float, float], timeout: float | None,
                 clock: Callable[[], float]) -> None:
        self.long_poll = long_poll
        self.minimum, self.maximum = poll
        self.current = self.minimum
        self.timeout = timeout
        self.clock = clock
        self.deadline = None if timeout is None else clock() + timeout
        self.seen: tuple[Any, ...] | None = None
        self.job: Job | None = None

    def remaining(self) -> float | None:
        """Seconds left; WaitTimeout when none are."""
        if self.deadline is None:
            return None
        left = self.deadline - self.clock()
        if left <= 0:
            assert self.job is not None
            raise WaitTimeout(self.job, self.timeout or 0)
        return left

    def pause(self) -> float:
        left = self.remaining()
        if self.long_poll.supported is not False:
            return 0.0
        return self.current if left is None else min(self.current, left)

    def params(self) -> tuple[dict[str, Any], float]:
        """The poll's query and how long the server may hold it."""
        if self.long_poll.supported is False:
            return {}, 0.0
        left = self.remaining()
        hold = self.maximum if left is None else max(1.0, min(self.maximum, left))
        return {"wait": max(1, int(hold))}, hold

    def saw(self, job: Job) -> bool:
        """Record ``job``; True if a watcher should see it (first sight, or a change)."""
        self.job = job
        seen = (job.state, job.attempt, job.progress, job.cancel_requested)
        changed = seen != self.seen
        self.seen = seen
        self.current = self.minimum if changed else min(self.maximum, self.current * 1.5)
        return changed


# POST /jobs:batch takes up to this many jobs a request.
MAX_BULK = 25


class Bulk:
    """One ``submit_many``: the jobs with a key each (made unless given), cut into requests of
    ``MAX_BULK``, and each job's outcome as its result comes back."""

    def __init__(self, jobs: Iterable[dict[str, Any]]) -> None:
        self.items = [{**job, "idempotency_key": job.get("idempotency_key") or new_idempotency_key()} for job in jobs]
        self.results: list[Accepted | ProblemError | None] = [None] * len(self.items)

    def chunks(self) -> Iterator[list[int]]:
        for start in range(0, len(self.items), MAX_BULK):
            yield list(range(start, min(start + MAX_BULK, len(self.items))))

    def body(self, chunk: list[int]) -> dict[str, Any]:
        return {"jobs": [self.items[i] for i in chunk]}

    def record(self, chunk: list[int], response: httpx.Response) -> list[int]:
        """Each item's outcome; the items worth another try (429, 5xx: their keys make it safe)."""
        again = []
        for index, result in zip(chunk, response.json()["results"]):
            key = self.items[index]["idempotency_key"]
            if result.get("job"):
                job = result["job"]
                self.results[index] = Accepted(job_id=job["job_id"], state=State(job["state"]), route=job["route"],
                                               created_at=job["created_at"], location=job["location"],
                                               idempotency_key=key, replayed=result["status"] == 200)
            else:
                self.results[index] = problem_of(result["status"], result.get("problem") or {})
                if result["status"] in RETRY_STATUSES:
                    again.append(index)
        return again


def user_agent() -> str:
    from . import __version__

    return f"jobbridge-client/{__version__} httpx/{httpx.__version__}"
