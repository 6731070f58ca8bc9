"""The synchronous client.

    with Client("http://127.0.0.1:8000", token=os.environ["JOBBRIDGE_TOKEN"]) as jobs:
        accepted = jobs.submit("echo", {"hello": "world"})
        job = jobs.wait(accepted.job_id, timeout=60)   # JobFailed / JobCancelled / WaitTimeout

Every request is retried on 429, 5xx and connection errors (``RetryPolicy``: exponential backoff
with jitter, honouring ``Retry-After``). Every submit carries an Idempotency-Key (made here unless
given), the same on each of its retries, so a retried submit never makes a second job.
``token`` is a bearer token, or a callable returning one: it is called once, and once more after a
401 (the token expired), the request then tried again once.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

import httpx

from . import _core
from .errors import ConnectionFailed, Conflict, ProblemError, problem_error
from .models import Accepted, Job, JobSummary, Page, State


class _Token:
    def __init__(self, token: _core.Token) -> None:
        self.source = token
        self.value: str | None = token if isinstance(token, str) else None

    @property
    def refreshable(self) -> bool:
        return callable(self.source)

    def header(self, refresh: bool = False) -> dict[str, str]:
        if callable(self.source) and (refresh or self.value is None):
            self.value = self.source()  # type: ignore[assignment]
        return {"Authorization": f"Bearer {self.value}"} if self.value else {}


class Client:
    def __init__(self, base_url: str = "", *, token: _core.Token = None, timeout: float = 30.0,
                 retry: _core.RetryPolicy = _core.RetryPolicy(), transport: httpx.BaseTransport | None = None,
                 poll: tuple[float, float] = (0.25, 3.0), sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers={"User-Agent": _core.user_agent()})
        self._token = _Token(token)
        self._timeout = timeout
        self.retry = retry
        self._poll = poll
        self._sleep = sleep
        self._clock = clock
        self._long_poll = _core.LongPollSupport()

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- the API ---------------------------------------------------------------------------------

    def submit(self, type: str, params: dict[str, Any] | None = None, *, target: str | None = None,
               priority: int | None = None, requirements: dict[str, Any] | None = None,
               data_classification: str | None = None, idempotency_key: str | None = None) -> Accepted:
        """Submit a job (202). ``idempotency_key``: give your own to make a submit safe to repeat
        across processes; one is made otherwise, so this call's own retries never make two jobs."""
        key = idempotency_key or _core.new_idempotency_key()
        body = _core.submit_body(type, params, target=target, priority=priority, requirements=requirements,
                                 data_classification=data_classification)
        response = self._request("POST", "/jobs", json=body, headers={"Idempotency-Key": key})
        return _core.accepted_of(response, key)

    def submit_many(self, jobs: Iterable[dict[str, Any]]) -> list[Accepted | ProblemError]:
        """Submit many jobs, 25 a request (``POST /jobs:batch``): each job a ``POST /jobs`` body
        (``type``, ``params``, ...; ``idempotency_key`` made unless given). One result per job, in
        order: ``Accepted``, or the ``ProblemError`` that job met (after retries for a 429/5xx)."""
        bulk = _core.Bulk(jobs)
        for chunk in bulk.chunks():
            retry = 0
            while chunk:
                again = bulk.record(chunk, self._request("POST", "/jobs:batch", json=bulk.body(chunk)))
                delay = self.retry.delay(retry) if again else None
                if delay is None:
                    break
                self._sleep(delay)
                retry, chunk = retry + 1, again
        return bulk.results  # type: ignore[return-value]

    def get(self, job_id: str) -> Job:
        return Job.of(self._request("GET", f"/jobs/{job_id}").json())

    def list_page(self, *, state: State | str | None = None, type: str | None = None, page_size: int = 20,
                  cursor: str | None = None) -> Page:
        return _core.page_of(self._request("GET", "/jobs", params=_core.list_params(state, type, page_size, cursor)))

    def list(self, *, state: State | str | None = None, type: str | None = None,
             page_size: int = 20) -> Iterator[JobSummary]:
        """Every job of the caller, newest first, page after page (``next_cursor``)."""
        cursor: str | None = None
        while True:
            page = self.list_page(state=state, type=type, page_size=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel: CANCELLED at once if queued, ``cancel_requested`` if running. A job already
        cancelled (a retried cancel's first try may have done it) is returned, not an error."""
        try:
            return Job.of(self._request("POST", f"/jobs/{job_id}/cancel").json())
        except Conflict:
            job = self.get(job_id)
            if job.state is State.CANCELLED:
                return job
            raise

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job now, then each time its state, attempt, progress or cancel flag changes;
        the last one yielded is final. WaitTimeout if it is not final within ``timeout`` seconds."""
        watch = _core.Watch(self._long_poll, self._poll, timeout, self._clock)
        job = self.get(job_id)
        watch.saw(job)
        yield job
        while not job.state.is_final:
            pause = watch.pause()
            if pause:
                self._sleep(pause)
            params, hold = watch.params()
            response = self._request("GET", f"/jobs/{job_id}", params=params, timeout=self._timeout + hold)
            if params:
                self._long_poll.learn(response)
            job = Job.of(response.json())
            if watch.saw(job):
                yield job

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once final: returned if SUCCEEDED; JobFailed (with the job's error) or
        JobCancelled otherwise; WaitTimeout if still not final after ``timeout`` seconds."""
        job = None
        for job in self.watch(job_id, timeout=timeout):
            pass
        assert job is not None
        return _core.final_outcome(job)

    # --- plumbing --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> httpx.Response:
        retry = 0
        refreshed = False
        while True:
            try:
                response = self._http.request(method, path, json=json, params=params,
                                              headers={**(headers or {}), **self._token.header()},
                                              timeout=timeout or self._timeout)
            except httpx.TransportError as exc:
                delay = self.retry.delay(retry)
                if delay is None:
                    raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
                self._sleep(delay)
                retry += 1
                continue
            if response.status_code == 401 and self._token.refreshable and not refreshed:
                self._token.header(refresh=True)
                refreshed = True
                continue
            if response.status_code in _core.RETRY_STATUSES:
                delay = self.retry.delay(retry, _core.retry_after(response))
                if delay is not None:
                    self._sleep(delay)
                    retry += 1
                    continue
            if response.is_error:
                raise problem_error(response)
            return response
